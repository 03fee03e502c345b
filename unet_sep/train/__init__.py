"""Training: recipes, datasets (MUSDB18, folders of stems), augmentation and the training loop."""
