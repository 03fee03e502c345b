"""Data sets for training and evaluation: MUSDB18(-HQ) and folders of stem files, decoded to a model's rate.

- :mod:`~unet_sep.data.config`: :class:`DataConfig`, where the data is (a recipe's ``data`` section).
- :mod:`~unet_sep.data.formats`: the registry of formats by ``kind``; :mod:`~unet_sep.data.musdb` and
  :mod:`~unet_sep.data.folders` are the two formats, :mod:`~unet_sep.data.source` what a format provides.
- :mod:`~unet_sep.data.tracks`: :class:`TrackSpec` (where a track's stems are), :class:`Track` (the decoded
  stems) and :func:`mix`.
- :mod:`~unet_sep.data.load`: :func:`list_tracks` and :func:`load_tracks`: every target as float32
  ``[channels, samples]`` at the model's rate and channel count, or memory-mapped from the decode cache
  (:mod:`~unet_sep.data.cache`).

Reading MUSDB needs the optional ``musdb`` package (the ``train`` and ``eval`` extras); decoding a
``.stem.mp4`` also needs the ffmpeg and ffprobe programs (:mod:`~unet_sep.data.musdb_support`).
"""

from unet_sep.data.config import DataConfig
from unet_sep.data.formats import FORMATS, data_format, recognise_format
from unet_sep.data.load import list_tracks, load_track, load_tracks, probe_track
from unet_sep.data.tracks import ACCOMPANIMENT, DatasetError, Track, TrackSpec, mix

__all__ = [
    "ACCOMPANIMENT",
    "FORMATS",
    "DataConfig",
    "DatasetError",
    "Track",
    "TrackSpec",
    "data_format",
    "list_tracks",
    "load_track",
    "load_tracks",
    "mix",
    "probe_track",
    "recognise_format",
]
