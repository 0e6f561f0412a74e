"""Fitting a network: datasets and transforms, models, the training loop, distributed
processes, resuming, and preloading."""
