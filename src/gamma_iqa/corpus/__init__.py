"""Corpus tooling for building and evaluating the default model.

Distortions, full-reference fidelity, the distort-and-label pipeline that scripts/build_corpus.py and
scripts/evaluate_default.py share, the Qt .rcc reader and the gcompris corpus builder.
"""
