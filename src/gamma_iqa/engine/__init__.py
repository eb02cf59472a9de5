"""The engine layer: running models on data.

Devices, precision and process groups; scoring, evaluation, and training with its config and run log. Builds on
the models and data layers.
"""
