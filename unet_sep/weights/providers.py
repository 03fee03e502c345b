"""The model providers the registry lists, in display order.

A provider is a function returning :class:`~unet_sep.weights.entries.ModelEntry` objects; a new source of
models is a new function here. A new downloadable unet-sep model needs no code: it is an item of
``remote_models.json`` (see :mod:`unet_sep.weights.native`).
"""

from __future__ import annotations

from typing import Callable

from unet_sep.weights.entries import ModelEntry
from unet_sep.weights.native import bundled_models, remote_models
from unet_sep.weights.spleeter import spleeter_models

Provider = Callable[[], list[ModelEntry]]

PROVIDERS: tuple[Provider, ...] = (bundled_models, remote_models, spleeter_models)
