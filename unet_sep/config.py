"""Configuration dataclasses for a separation model, with a JSON round trip and validation.

A model on disk is a folder holding ``config.json`` (this module's :class:`ModelConfig`) and
``model.safetensors``. Everything the signal path needs to reproduce a model's output is in the config:
the STFT, the U-Net architecture, the stems, the sample rate and the mask settings.

``config.json`` carries the version of its format (:data:`FORMAT_KEY`). A config of an older format is brought
to the current one in memory when read, one step of :data:`MIGRATIONS` per version; one of a newer format than
this code knows is refused with both versions named, before any of its keys is read.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unet_sep import __version__
from unet_sep.errors import ConfigError
from unet_sep.fields import build_section, read_json, show_value

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

CONV_ACTIVATIONS = ("leaky_relu", "relu", "elu")
MASK_ACTIVATIONS = ("sigmoid", "softmax")
# How masks are extended above the U-Nets' F bins (unet_sep.dsp.masks.extension_mask says what each does).
MASK_EXTENSIONS = ("zeros", "average", "last", "capped_average")
PRECISIONS = ("fp32", "bf16", "fp16")  # the network's arithmetic, in separation and in training
# Most Wiener (EM) iterations a model or a separation asks for: each costs about as much as the first.
MAX_WIENER_ITERATIONS = 10
# The streaming Wiener filter's statistics window, in STFT frames (about 24 s at 44.1 kHz with hop 1024).
DEFAULT_WIENER_WINDOW = 1024
# More channels than any audio layout in use has (22.2 surround: 24; 7th-order ambisonics: 64): a larger count is
# an array in the wrong layout, e.g. soundfile's [samples, channels], or a config that is not a model's.
MAX_CHANNELS = 64
# Upper bounds of the config values that size memory and work, checked before anything is allocated for them: far
# above any model in use (Spleeter: n_fft 4096, hop 1024, T 512, filters up to 512, 5 stems), far below what would
# exhaust a machine (a segment of T frames and F bins is held per channel, stem and batch item at every U-Net level).
MAX_N_FFT = 32768
MAX_FRAME_OVERLAP = 16  # n_fft / hop_length: STFT frames per hop's worth of samples
MAX_SEGMENT_FRAMES = 4096
MAX_STEMS = 16
MAX_UNET_DEPTH = 10
MAX_FILTERS = 4096
MAX_KERNEL_SIZE = 15
MAX_WEIGHTS = 500_000_000  # all U-Nets together (2 GB in float32); Spleeter's 5 stems have about 49 million


@dataclass
class STFTConfig:
    """Short-time Fourier transform settings.

    Framing follows Spleeter: ``n_fft`` zeros are prepended to the signal, frames of ``n_fft`` samples
    start every ``hop_length`` samples and the end is zero-padded so that the last frame is full. A
    periodic Hann window is used for analysis and synthesis, and the inverse divides by the summed squared
    window, so an unmodified STFT inverts exactly.
    """

    n_fft: int = 4096
    hop_length: int = 1024

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def validate(self) -> None:
        if not 16 <= self.n_fft <= MAX_N_FFT or self.n_fft % 2:
            raise ConfigError(f"stft.n_fft must be an even number from 16 to {MAX_N_FFT}, got {self.n_fft}")
        shortest = max(1, self.n_fft // MAX_FRAME_OVERLAP)
        if not shortest <= self.hop_length <= self.n_fft // 2:
            raise ConfigError(f"stft.hop_length must be from n_fft/{MAX_FRAME_OVERLAP} ({shortest}) to n_fft/2 "
                              f"({self.n_fft // 2}) for overlap-add, got {self.hop_length}")


@dataclass
class UNetConfig:
    """Architecture of one per-stem 2-D U-Net (Jansson et al. 2017, as in Spleeter).

    The encoder has one strided ``kernel_size`` x ``kernel_size`` convolution per entry of ``filters``
    (BatchNorm then ``conv_activation``); the decoder mirrors it with transposed convolutions
    (``deconv_activation`` then BatchNorm, dropout on the first ``dropout_layers``) and concatenates the
    raw encoder outputs as skips. A final 4x4 dilated convolution gives one mask per audio channel.
    """

    filters: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    kernel_size: int = 5
    conv_activation: str = "leaky_relu"
    deconv_activation: str = "relu"
    dropout: float = 0.5
    dropout_layers: int = 3
    batchnorm_eps: float = 1e-3
    batchnorm_momentum: float = 0.01

    @property
    def depth(self) -> int:
        return len(self.filters)

    def weights_estimate(self, channels: int) -> int:
        """About how many weights one U-Net of this architecture has for ``channels`` audio channels, from the
        config alone (the convolutions: the encoder's, and about twice as many in the decoder, whose inputs
        carry the skips); within a factor of 1.5 of the real count."""
        sizes = [channels, *map(int, self.filters)]
        return 3 * self.kernel_size**2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def validate(self) -> None:
        if not 1 <= len(self.filters) <= MAX_UNET_DEPTH or any(not 1 <= int(f) <= MAX_FILTERS for f in self.filters):
            raise ConfigError(f"unet.filters must list 1 to {MAX_UNET_DEPTH} layers of 1 to {MAX_FILTERS} filters, got "
                              f"{self.filters}")
        if not 2 <= self.kernel_size <= MAX_KERNEL_SIZE:
            raise ConfigError(f"unet.kernel_size must be from 2 to {MAX_KERNEL_SIZE}, got {self.kernel_size}")
        for name in ("conv_activation", "deconv_activation"):
            if getattr(self, name) not in CONV_ACTIVATIONS:
                raise ConfigError(
                    f"unet.{name} must be one of {', '.join(CONV_ACTIVATIONS)}, got {getattr(self, name)!r}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"unet.dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.dropout_layers <= self.depth - 1:
            raise ConfigError(f"unet.dropout_layers must be in 0..{self.depth - 1}, got {self.dropout_layers}")


def _from_format_0(fields: dict[str, Any]) -> dict[str, Any]:
    """Format 0 is every config.json written before the format had a version; format 1 only adds the version."""
    return fields


# MIGRATIONS[v] turns the fields of a config.json of format version v into those of version v + 1: a function of
# the JSON object without its version key, which returns a new object (or its argument, unchanged).
def _from_format_1(fields: dict[str, Any]) -> dict[str, Any]:
    """Format 2 adds ``wiener_iterations`` (absent: 0, the ratio masks alone, as before) and no longer leaves the
    mask extension to the default of the day: a format-1 config without ``mask_extension`` meant "last"."""
    return {"mask_extension": "last", **fields}


def _from_format_2(fields: dict[str, Any]) -> dict[str, Any]:
    """Format 3 adds ``weights_sha256``, the digest of ``model.safetensors`` that loading checks; a folder written
    before has none (absent: "", its weights load unverified, with a warning)."""
    return fields


MIGRATIONS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (_from_format_0, _from_format_1, _from_format_2)
FORMAT_VERSION = len(MIGRATIONS)  # the format version of the config.json this code writes: 3
FORMAT_KEY = "format_version"  # its key in config.json; absent from the files of format 0


def migrate_config(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of the config.json object ``data``, of any format version up to :data:`FORMAT_VERSION`, as the
    current format has them (without the version key). A :class:`ConfigError` when its version is newer than
    this code reads, or not a version; ``data`` itself is left unchanged."""
    version = data.get(FORMAT_KEY, 0)
    if type(version) is not int or version < 0:
        raise ConfigError(f"{FORMAT_KEY} must be an integer >= 0, got {show_value(version)}")
    if version > FORMAT_VERSION:
        raise ConfigError(f"model format version {version} is newer than unet-sep {__version__} reads "
                          f"(format version {FORMAT_VERSION}): upgrade unet-sep")
    fields = {key: value for key, value in data.items() if key != FORMAT_KEY}
    for migration in MIGRATIONS[version:]:
        fields = migration(fields)
    return fields


@dataclass
class ModelConfig:
    """Everything that defines a separation model.

    Attributes:
        stems: output names, in the order the U-Nets are built and stems are returned.
        sample_rate: the rate the model works at; inputs are resampled to it and outputs back.
        n_channels: audio channels the U-Net sees (2 = stereo). Other channel counts are mapped onto this
            by :mod:`unet_sep.separate.channels`.
        frequency_bins: F, the number of STFT bins (from 0 Hz) the U-Net sees; must be a multiple of
            ``2 ** depth``. Above F the masks are extended by ``mask_extension``.
        segment_frames: T, the number of STFT frames per U-Net segment; a multiple of ``2 ** depth``.
        mask_activation: "sigmoid" (one independent mask per stem) or "softmax" (across stems).
        separation_exponent: exponent p of the ratio masks ``o_i**p / sum_j o_j**p``.
        mask_extension: how masks are extended above F: "zeros" (Spleeter), "average" (mean over the F
            bins), "last" (the mask of bin F-1) or "capped_average" (the mean mask capped by the stem's share of
            the energy of the band's top octave, renormalised: nothing above F for a stem either gives nothing).
            Any but "zeros" keeps the stems summing to the mixture.
        wiener_iterations: the model's default number of multichannel Wiener (EM) iterations after the masks
            (0: the ratio masks alone); a separation can ask for another number.
        provenance: free-form facts about where the weights come from (data, commit, date, scores).
        weights_sha256: the sha256 (64 lowercase hex digits) of the folder's ``model.safetensors``, written with it
            by every writer of model folders and checked when it is loaded
            (:func:`~unet_sep.weights.checkpoint.verify_weights`); "" in folders written before (not checked).
    """

    stems: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    sample_rate: int = 44100
    n_channels: int = 2
    frequency_bins: int = 1024
    segment_frames: int = 512
    mask_activation: str = "sigmoid"
    separation_exponent: float = 2.0
    mask_extension: str = "capped_average"
    wiener_iterations: int = 0
    stft: STFTConfig = field(default_factory=STFTConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    name: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""

    @property
    def band_hz(self) -> float:
        """The top of the band the U-Nets see: ``frequency_bins`` STFT bins at this rate, in Hz."""
        return self.frequency_bins * self.sample_rate / self.stft.n_fft

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a readable message if the config is inconsistent."""
        self.stft.validate()
        self.unet.validate()
        if not 1 <= len(self.stems) <= MAX_STEMS or len(set(self.stems)) != len(self.stems):
            raise ConfigError(f"stems must be a list of 1 to {MAX_STEMS} distinct names, got "
                              f"{self.stems if len(self.stems) <= MAX_STEMS else f'{len(self.stems)} names'}")
        for stem in self.stems:
            if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
                raise ConfigError(f"stem name {stem!r} cannot be used as a file name")
        if not 1000 <= self.sample_rate <= 384000:
            raise ConfigError(f"sample_rate must be in 1000..384000 Hz, got {self.sample_rate}")
        if not 1 <= self.n_channels <= MAX_CHANNELS:
            raise ConfigError(f"n_channels must be from 1 to {MAX_CHANNELS}, got {self.n_channels}")
        multiple = 2 ** self.unet.depth
        if self.frequency_bins < multiple or self.frequency_bins % multiple:
            raise ConfigError(
                f"frequency_bins (F={self.frequency_bins}) must be a positive multiple of 2**depth = {multiple}"
            )
        if self.frequency_bins > self.stft.n_bins:
            raise ConfigError(
                f"frequency_bins (F={self.frequency_bins}) exceeds the STFT's {self.stft.n_bins} bins"
            )
        if not multiple <= self.segment_frames <= MAX_SEGMENT_FRAMES or self.segment_frames % multiple:
            raise ConfigError(f"segment_frames (T={self.segment_frames}) must be a multiple of 2**depth = {multiple} "
                              f"from {multiple} to {MAX_SEGMENT_FRAMES}")
        weights = len(self.stems) * self.unet.weights_estimate(self.n_channels)
        if weights > MAX_WEIGHTS:
            raise ConfigError(f"unet.filters: {len(self.stems)} U-Nets of filters {self.unet.filters} would hold about "
                              f"{weights / 1e6:.0f} million weights; unet-sep loads at most {MAX_WEIGHTS / 1e6:.0f} "
                              "million")
        if self.mask_activation not in MASK_ACTIVATIONS:
            raise ConfigError(f"mask_activation must be one of {MASK_ACTIVATIONS}, got {self.mask_activation!r}")
        if self.mask_activation == "softmax" and len(self.stems) < 2:
            raise ConfigError("a softmax mask needs at least two stems")
        if self.mask_extension not in MASK_EXTENSIONS:
            raise ConfigError(f"mask_extension must be one of {MASK_EXTENSIONS}, got {self.mask_extension!r}")
        if not 0 <= self.wiener_iterations <= MAX_WIENER_ITERATIONS:
            raise ConfigError(f"wiener_iterations must be in 0..{MAX_WIENER_ITERATIONS}, got {self.wiener_iterations}")
        if self.separation_exponent <= 0:
            raise ConfigError(f"separation_exponent must be > 0, got {self.separation_exponent}")
        if self.weights_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.weights_sha256):
            raise ConfigError(f"weights_sha256 must be 64 lowercase hex digits (or absent), got "
                              f"{show_value(self.weights_sha256)}")

    def to_dict(self) -> dict[str, Any]:
        """The config as ``config.json`` holds it: the format version (:data:`FORMAT_KEY`), then every field."""
        return {FORMAT_KEY: FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build a config from a ``config.json`` object: one of an older format version is migrated first and
        one of a newer version refused (:func:`migrate_config`), then every value is checked against its
        field's type and unknown keys are refused."""
        fields = migrate_config(data) if isinstance(data, dict) else data
        config = build_section(cls, fields, "")
        config.validate()
        return config

    def to_json(self) -> str:
        """The text of ``config.json``: :meth:`to_dict` as indented JSON, in the current format version."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON, in the current format version."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        """Read a config written by :meth:`save`, by this or an earlier version; a :class:`ConfigError` names the
        file."""
        path = Path(path)
        try:
            return cls.from_dict(read_json(path, "model config"))
        except ConfigError as error:
            message = str(error)
            raise ConfigError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None

