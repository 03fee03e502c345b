"""What a registered model is, and where its files live: the package (bundled) or the user's cache (downloaded).

A :class:`ModelEntry` is data that model providers (:mod:`unet_sep.weights.providers`) return; the registry
(:mod:`unet_sep.weights.registry`) resolves names to model folders with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CACHE_ENV = "UNET_SEP_CACHE"


class ModelNotFoundError(Exception):
    """Neither a registered name nor a model folder, or a registered model that cannot be fetched."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    ``bundled`` is a folder inside the package; otherwise ``url`` is fetched, checked against ``sha256`` and
    turned into a model folder by ``convert(downloaded_file, destination_folder)``. ``revision`` counts the
    changes to what ``convert`` writes: a folder cached by an earlier revision is not used (it is converted
    again, from the kept download, and the old folder removed).
    """

    name: str
    description: str
    stems: tuple[str, ...]
    sample_rate: int
    band_hz: float = 0.0  # the top of the band the U-Nets see (frequency_bins x sample_rate / n_fft)
    bundled: str | None = None
    url: str | None = None
    sha256: str | None = None
    convert: Callable[[Path, Path], None] | None = field(default=None, compare=False, repr=False)
    revision: int = 1

    @property
    def source(self) -> str:
        if self.bundled is not None:
            return f"bundled ({self.bundled})"
        return self.url or "?"

    def cache_folder(self, revision: int | None = None) -> Path:
        """Where the converted model of a downloadable entry is kept (by ``revision``, default the current)."""
        revision = self.revision if revision is None else revision
        suffix = f".r{revision}" if revision > 1 else ""
        return cache_dir() / "models" / (self.name.replace(":", "_") + suffix)

    def stale_folders(self) -> list[Path]:
        """Cached conversions of earlier revisions that are still on disk."""
        return [folder for folder in map(self.cache_folder, range(1, self.revision)) if folder.is_dir()]

    def local_folder(self) -> Path | None:
        """The model folder if it is on disk already (bundled, or downloaded and converted before), else None."""
        if self.bundled is not None:
            return PACKAGE_DIR / self.bundled
        folder = self.cache_folder()
        return folder if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file() else None


def cache_dir() -> Path:
    """Where downloaded models live: ``$UNET_SEP_CACHE`` or the platform's user cache folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("unet-sep"))
