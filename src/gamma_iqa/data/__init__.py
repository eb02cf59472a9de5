"""The data layer: datasets and the images that go into a model.

The dataset registry and splits, label readers, image decoding and crops, input sources and manifests, and the
joint training sampler. Builds on the models layer (scenes) only.
"""
