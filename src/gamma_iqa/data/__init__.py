"""The data layer: the dataset registry and splits, label readers, image decoding and crops, input sources and
manifests, and the joint training sampler. Builds on the models layer (scenes) only."""
