"""Training: recipes (recipe.py), the excerpt sampler and augmentation (sampler.py, augment.py), and the Trainer
(loop.py) with its checkpoints, validation, metrics and resume rules. The data sets are :mod:`unet_sep.data`."""
