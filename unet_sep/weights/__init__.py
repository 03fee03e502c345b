"""Model files: safetensors checkpoints with a JSON config, and the registry of named models."""

from unet_sep.weights.checkpoint import CheckpointError, load_model, save_model
from unet_sep.weights.entries import ModelEntry
from unet_sep.weights.registry import registered_models, resolve_model

__all__ = ["CheckpointError", "ModelEntry", "load_model", "registered_models", "resolve_model", "save_model"]
