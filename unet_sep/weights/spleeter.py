"""Spleeter's pretrained models without TensorFlow: a TF checkpoint reader and a converter to unet-sep.

Three layers, each usable on its own:

* :func:`read_tf_checkpoint` reads a TensorFlow "V2" checkpoint (``checkpoint`` + ``<prefix>.index`` +
  ``<prefix>.data-NNNNN-of-NNNNN``) into ``{variable name: numpy array}``. The index is a LevelDB-format
  table (SSTable) whose values are ``BundleEntryProto`` messages; both are decoded here with a minimal
  protobuf wire-format parser, and every tensor's masked CRC32C is verified (pure Python/numpy CRC32C).
* :func:`spleeter_model_config` and :func:`spleeter_state_dict` map a Spleeter config and its checkpoint
  variables (Keras auto-names such as ``conv2d_7/kernel``) onto a :class:`~unet_sep.config.ModelConfig`
  and a :class:`~unet_sep.model.stems.StemsNet` state dict. Unknown, missing or mis-shaped variables are
  errors that name the variables; nothing is silently dropped except ``global_step`` and the BatchNorm that
  Spleeter builds after its sixth encoder convolution but never uses (checked to be present, then dropped).
* :func:`load_spleeter`, :func:`convert_spleeter` and :func:`registry_entries` put it together: the six
  ``spleeter:*`` names resolve (via :mod:`unet_sep.weights.registry`) to Deezer's v1.4.0 release archives,
  which are downloaded once, checksum-verified, converted and cached as ordinary unet-sep model folders.

Environment overrides (read on every :func:`registry_entries` call): ``UNET_SEP_SPLEETER_URL`` replaces the
release base URL (a mirror, or a local server in tests) and ``UNET_SEP_SPLEETER_SHA256_<ARCHIVE>`` (e.g.
``UNET_SEP_SPLEETER_SHA256_2STEMS``) the expected sha256 of that archive.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from unet_sep.config import ConfigError, ModelConfig, STFTConfig, UNetConfig
from unet_sep.model.stems import StemsNet
from unet_sep.weights.checkpoint import save_model
from unet_sep.weights.registry import ModelEntry, extract_tar

logger = logging.getLogger(__name__)

__all__ = [
    "SpleeterCheckpointError",
    "TFCheckpointError",
    "checkpoint_variables",
    "convert_spleeter",
    "crc32c",
    "embedded_config",
    "embedded_names",
    "load_spleeter",
    "masked_crc32c",
    "read_tf_checkpoint",
    "registry_entries",
    "spleeter_model_config",
    "spleeter_state_dict",
]


class TFCheckpointError(ValueError):
    """A TensorFlow checkpoint that cannot be read; the message names the file and the problem."""


class SpleeterCheckpointError(ValueError):
    """Checkpoint variables that do not form the Spleeter model the config describes."""


# =========================================================================================================
# CRC32C (Castagnoli), as used by LevelDB tables and TF tensor bundles
# =========================================================================================================

_CRC_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)
# Below this many bytes a plain Python loop is fast enough (a few milliseconds).
_PY_CRC_LIMIT = 1 << 15


def _crc_register(register: int, data: bytes | memoryview) -> int:
    """Run the raw (reflected, no pre/post inversion) CRC register over ``data``."""
    table = _TABLE
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


# The register update is linear over GF(2): register(s, data) = Z_n(s) ^ register(0, data), where Z_n is
# the (linear) effect of n zero bytes. Operators are 32x32 bit matrices stored as 32 column ints.
def _gf2_apply(matrix: list[int], vector: int) -> int:
    result = 0
    column = 0
    while vector:
        if vector & 1:
            result ^= matrix[column]
        vector >>= 1
        column += 1
    return result


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_apply(matrix, column) for column in matrix]


_ZERO_BYTE = [_crc_register(1 << bit, b"\0") for bit in range(32)]


def _zeros_operator(count: int) -> list[int]:
    """The matrix of ``count`` zero bytes (identity for 0)."""
    result = [1 << bit for bit in range(32)]
    power = _ZERO_BYTE
    while count:
        if count & 1:
            result = [_gf2_apply(power, column) for column in result]
        count >>= 1
        if count:
            power = _gf2_square(power)
    return result


def _crc_register_numpy(data: np.ndarray) -> int:
    """``register(0, data)`` for a long uint8 array: many lanes in lockstep with numpy, then combined."""
    n = data.size
    lane = int(min(1 << 16, max(256, math.isqrt(n // 8))))
    lanes = -(-n // lane)
    padded = np.zeros(lanes * lane, dtype=np.uint8)
    # Leading zeros do not change register(0, .), so pad the front and cut into equal lanes.
    padded[lanes * lane - n :] = data
    columns = np.ascontiguousarray(padded.reshape(lanes, lane).T)
    registers = np.zeros(lanes, dtype=np.uint32)
    table = _TABLE_NP
    for column in columns:
        index = registers.astype(np.uint8)
        np.bitwise_xor(index, column, out=index)
        registers >>= 8
        registers ^= table[index]
    shift = _zeros_operator(lane)
    byte_tables = [[_gf2_apply(shift, b << (8 * j)) for b in range(256)] for j in range(4)]
    t0, t1, t2, t3 = byte_tables
    acc = 0
    for value in registers.tolist():
        acc = t0[acc & 0xFF] ^ t1[(acc >> 8) & 0xFF] ^ t2[(acc >> 16) & 0xFF] ^ t3[acc >> 24] ^ value
    return acc


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``; ``crc`` continues an earlier value (``crc32c(a+b) == crc32c(b, crc32c(a))``)."""
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        array = np.frombuffer(data, dtype=np.uint8)
    start = crc ^ _U32
    if array.size < _PY_CRC_LIMIT:
        return _crc_register(start, array.tobytes()) ^ _U32
    register = _gf2_apply(_zeros_operator(array.size), start) ^ _crc_register_numpy(array)
    return register ^ _U32


def masked_crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The masked CRC32C that LevelDB tables and TF bundles store."""
    return _mask(crc32c(data))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


# =========================================================================================================
# Protobuf wire format (only what BundleHeaderProto / BundleEntryProto need)
# =========================================================================================================


def _varint(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError(f"{where}: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise TFCheckpointError(f"{where}: varint longer than 10 bytes")


def _proto_fields(buf: bytes | memoryview, where: str) -> dict[int, list[Any]]:
    """Decode one message into ``{field number: [values]}`` (ints for varint/fixed, bytes for length-delimited)."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise TFCheckpointError(f"{where}: invalid protobuf field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            if pos + 8 > end:
                raise TFCheckpointError(f"{where}: truncated fixed64 field {number}")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos, where)
            if pos + length > end:
                raise TFCheckpointError(f"{where}: truncated length-delimited field {number}")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise TFCheckpointError(f"{where}: truncated fixed32 field {number}")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise TFCheckpointError(f"{where}: unsupported protobuf wire type {wire} (field {number})")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict[int, list[Any]], number: int, default: Any = 0) -> Any:
    values = fields.get(number)
    return values[-1] if values else default


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# =========================================================================================================
# LevelDB table (SSTable) used for <prefix>.index
# =========================================================================================================

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5
_COMPRESSION_NAMES = {1: "snappy", 2: "zlib", 3: "bzip2", 4: "lz4", 5: "lz4hc", 6: "xpress", 7: "zstd"}


def _block_handle(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, where)
    size, pos = _varint(buf, pos, where)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, where: str) -> memoryview:
    end = offset + size
    if end + _BLOCK_TRAILER > len(data):
        raise TFCheckpointError(f"{where}: block at {offset} (+{size}) runs past the end of the file")
    contents = memoryview(data)[offset:end]
    kind = data[end]
    stored = int.from_bytes(data[end + 1 : end + 5], "little")
    actual = _mask(crc32c(data[offset : end + 1]))  # the checksum covers the contents and the type byte
    if stored != actual:
        raise TFCheckpointError(f"{where}: block at {offset} fails its CRC32C check (file corrupted?)")
    if kind != 0:
        name = _COMPRESSION_NAMES.get(kind, f"type {kind}")
        raise TFCheckpointError(
            f"{where}: block at {offset} is {name}-compressed; only uncompressed tables (what TensorFlow "
            "writes for checkpoints) are supported"
        )
    return contents


def _block_entries(block: memoryview, where: str) -> Iterator[tuple[bytes, memoryview]]:
    if len(block) < 4:
        raise TFCheckpointError(f"{where}: block too short")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise TFCheckpointError(f"{where}: bad restart count {restarts}")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        value_length, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + value_length > limit:
            raise TFCheckpointError(f"{where}: corrupted block entry at {pos}")
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length


def _read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, in key order."""
    data = path.read_bytes()
    where = str(path)
    if len(data) < _FOOTER_SIZE:
        raise TFCheckpointError(f"{where}: too short to be a checkpoint index ({len(data)} bytes)")
    if int.from_bytes(data[-8:], "little") != _TABLE_MAGIC:
        raise TFCheckpointError(f"{where}: not a TensorFlow checkpoint index (bad table magic number)")
    footer = memoryview(data)[-_FOOTER_SIZE:-8]
    _, _, pos = _block_handle(footer, 0, where)  # metaindex: no filters or stats are needed
    index_offset, index_size, _ = _block_handle(footer, pos, where)
    index = _read_block(data, index_offset, index_size, where)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(index, where):
        offset, size, _ = _block_handle(handle, 0, where)
        block = _read_block(data, offset, size, where)
        entries.extend((key, bytes(value)) for key, value in _block_entries(block, where))
    return entries


# =========================================================================================================
# Tensor bundle (TF checkpoint V2)
# =========================================================================================================

# tensorflow/core/framework/types.proto: DataType -> little-endian numpy dtype.
_DTYPES: dict[int, str] = {
    1: "<f4",  # DT_FLOAT
    2: "<f8",  # DT_DOUBLE
    3: "<i4",  # DT_INT32
    4: "u1",  # DT_UINT8
    5: "<i2",  # DT_INT16
    6: "i1",  # DT_INT8
    8: "<c8",  # DT_COMPLEX64
    9: "<i8",  # DT_INT64
    10: "?",  # DT_BOOL
    17: "<u2",  # DT_UINT16
    18: "<c16",  # DT_COMPLEX128
    19: "<f2",  # DT_HALF
    22: "<u4",  # DT_UINT32
    23: "<u8",  # DT_UINT64
}
_DT_STRING = 7
_DT_BFLOAT16 = 14
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}


class _Entry:
    __slots__ = ("name", "dtype", "shape", "shard", "offset", "size", "crc")

    def __init__(self, name: str, raw: bytes, where: str) -> None:
        fields = _proto_fields(raw, f"{where}: entry {name!r}")
        if 7 in fields:
            raise TFCheckpointError(
                f"{where}: variable {name!r} is stored in slices (a partitioned variable); not supported"
            )
        self.name = name
        self.dtype = _last(fields, 1)
        shape_fields = _proto_fields(_last(fields, 2, b""), f"{where}: shape of {name!r}")
        if _last(shape_fields, 3):
            raise TFCheckpointError(f"{where}: variable {name!r} has an unknown rank")
        dims = []
        for dim in shape_fields.get(2, []):
            size = _int64(_last(_proto_fields(dim, f"{where}: shape of {name!r}"), 1))
            if size < 0:
                raise TFCheckpointError(f"{where}: variable {name!r} has an unknown dimension")
            dims.append(size)
        self.shape = tuple(dims)
        self.shard = _last(fields, 3)
        self.offset = _last(fields, 4)
        self.size = _last(fields, 5)
        self.crc = _last(fields, 6)

    def dtype_name(self) -> str:
        if self.dtype in _DTYPES:
            return np.dtype(_DTYPES[self.dtype]).name
        return _DTYPE_NAMES.get(self.dtype, f"DataType {self.dtype}")


def _checkpoint_prefix(path: str | Path) -> Path:
    """The checkpoint prefix (``<folder>/model``) for a folder, a ``checkpoint`` file, an index file or a prefix."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "checkpoint":
        path = path.parent
    if path.is_file() and path.suffix == ".index":
        return path.with_suffix("")
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            text = state.read_text(encoding="utf-8", errors="replace")
            match = re.search(r'^\s*model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', text, re.MULTILINE)
            if match is None:
                raise TFCheckpointError(f"{state}: no model_checkpoint_path line")
            name = re.sub(r"\\(.)", r"\1", match.group(1))
            prefix = Path(name)
            if not prefix.is_absolute():
                prefix = path / prefix
            if not prefix.with_name(prefix.name + ".index").is_file():
                # Checkpoints moved from another machine may name an absolute path that no longer exists.
                fallback = path / Path(name).name
                if fallback.with_name(fallback.name + ".index").is_file():
                    return fallback
                raise TFCheckpointError(f"{state}: names checkpoint {name!r} but {prefix}.index does not exist")
            return prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise TFCheckpointError(f"{path}: no TensorFlow checkpoint here (no 'checkpoint' or *.index file)")
        raise TFCheckpointError(
            f"{path}: several checkpoints ({', '.join(p.name for p in indexes)}) and no 'checkpoint' file to choose"
        )
    if path.with_name(path.name + ".index").is_file():
        return path
    raise TFCheckpointError(f"{path}: not a TensorFlow checkpoint folder, index file or prefix")


def _read_index(prefix: Path) -> tuple[int, list[_Entry]]:
    index_path = prefix.with_name(prefix.name + ".index")
    where = str(index_path)
    header: bytes | None = None
    entries: list[_Entry] = []
    for key, value in _read_table(index_path):
        if key == b"":
            header = value
        else:
            entries.append(_Entry(key.decode("utf-8", errors="replace"), value, where))
    if header is None:
        raise TFCheckpointError(f"{where}: no bundle header (empty key); not a TF checkpoint V2 index")
    fields = _proto_fields(header, f"{where}: header")
    num_shards = _last(fields, 1, 1)
    if _last(fields, 2) != 0:
        raise TFCheckpointError(f"{where}: big-endian checkpoints are not supported")
    if num_shards < 1:
        raise TFCheckpointError(f"{where}: header says {num_shards} shards")
    return num_shards, entries


def checkpoint_variables(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{variable name: (dtype name, shape)}`` of a checkpoint, from its index alone (no tensor data read)."""
    _, entries = _read_index(_checkpoint_prefix(path))
    return {entry.name: (entry.dtype_name(), entry.shape) for entry in entries}


def read_tf_checkpoint(path: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Read every variable of a TensorFlow V2 checkpoint, without TensorFlow.

    Args:
        path: a checkpoint folder (with a ``checkpoint`` file or a single ``*.index``), the ``checkpoint``
            file, an ``.index`` file or the prefix (``folder/model``).
        verify: check each tensor's masked CRC32C (on by default; ~1 s per 100 MB).

    Returns:
        ``{name: array}`` in the stored dtype and shape (string tensors as object arrays of bytes).
    """
    prefix = _checkpoint_prefix(path)
    num_shards, entries = _read_index(prefix)
    shards: dict[int, bytes] = {}
    result: dict[str, np.ndarray] = {}
    for entry in entries:
        if entry.shard >= num_shards:
            raise TFCheckpointError(f"{prefix}: variable {entry.name!r} is in shard {entry.shard} of {num_shards}")
        if entry.shard not in shards:
            shard_path = prefix.with_name(f"{prefix.name}.data-{entry.shard:05d}-of-{num_shards:05d}")
            if not shard_path.is_file():
                raise TFCheckpointError(f"{prefix}: missing data file {shard_path.name}")
            shards[entry.shard] = shard_path.read_bytes()
        data = shards[entry.shard]
        where = f"{prefix}: variable {entry.name!r}"
        if entry.offset + entry.size > len(data):
            raise TFCheckpointError(f"{where}: stored bytes run past the end of the data file (truncated?)")
        raw = memoryview(data)[entry.offset : entry.offset + entry.size]
        if entry.dtype == _DT_STRING:
            result[entry.name] = _decode_strings(raw, entry, where, verify)
            continue
        if verify and _mask(crc32c(raw)) != entry.crc:
            raise TFCheckpointError(f"{where}: CRC32C mismatch (data file corrupted or not this index's)")
        count = math.prod(entry.shape)
        if entry.dtype == _DT_BFLOAT16:
            array = _check_size(raw, count, 2, where).view("<u2").astype(np.uint32) << 16
            result[entry.name] = array.view(np.float32).reshape(entry.shape)
            continue
        if entry.dtype not in _DTYPES:
            raise TFCheckpointError(f"{where}: unsupported dtype {entry.dtype_name()}")
        dtype = np.dtype(_DTYPES[entry.dtype])
        array = _check_size(raw, count, dtype.itemsize, where).view(dtype).reshape(entry.shape)
        result[entry.name] = array.astype(dtype.newbyteorder("="), copy=False)
    return result


def _check_size(raw: memoryview, count: int, itemsize: int, where: str) -> np.ndarray:
    if len(raw) != count * itemsize:
        raise TFCheckpointError(f"{where}: {len(raw)} bytes stored, its shape and dtype need {count * itemsize}")
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _decode_strings(raw: memoryview, entry: _Entry, where: str, verify: bool) -> np.ndarray:
    # tensor_bundle.cc WriteStringTensor: [varint64 len]*n [masked crc32c of the lengths as uint64] [bytes]*n;
    # the entry's crc32c covers the lengths (as little-endian uint64), that checksum and the bytes.
    count = math.prod(entry.shape)
    pos = 0
    lengths = []
    for _ in range(count):
        length, pos = _varint(raw, pos, where)
        lengths.append(length)
    length_bytes = struct.pack(f"<{count}Q", *lengths)
    stored = int.from_bytes(raw[pos : pos + 4], "little")
    crc = crc32c(length_bytes)
    if verify and stored != _mask(crc):
        raise TFCheckpointError(f"{where}: string lengths fail their CRC32C check")
    crc = crc32c(raw[pos : pos + 4], crc)
    pos += 4
    if pos + sum(lengths) != len(raw):
        raise TFCheckpointError(f"{where}: string tensor holds {len(raw) - pos} bytes, its lengths say {sum(lengths)}")
    if verify and _mask(crc32c(raw[pos:], crc)) != entry.crc:
        raise TFCheckpointError(f"{where}: CRC32C mismatch (data file corrupted or not this index's)")
    values = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        values[i] = bytes(raw[pos : pos + length])
        pos += length
    return values.reshape(entry.shape)


# =========================================================================================================
# Spleeter configs
# =========================================================================================================

DEFAULT_FILTERS = (16, 32, 64, 128, 256, 512)
RELEASE_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0"
URL_ENV = "UNET_SEP_SPLEETER_URL"
SHA256_ENV_PREFIX = "UNET_SEP_SPLEETER_SHA256_"
# sha256 of Deezer's v1.4.0 archives, as pinned by Spleeter's own test of its checksum index.
RELEASE_SHA256 = {
    "2stems": "f3a90b39dd2874269e8b05a48a86745df897b848c61f3958efc80a39152bd692",
    "4stems": "3adb4a50ad4eb18c7c4d65fcf4cf2367a07d48408a5eb7d03cd20067429dfaa8",
    "5stems": "25a1e87eb5f75cc72a4d2d5467a0a50ac75f05611f877c278793742513cc7218",
}
_INSTRUMENTS = {
    "2stems": ("vocals", "accompaniment"),
    "4stems": ("vocals", "drums", "bass", "other"),
    "5stems": ("vocals", "piano", "drums", "bass", "other"),
}
_TRAINING = {  # training-only keys: validation_csv, train_max_steps, throttle_secs, random_seed, save_checkpoints_steps
    "2stems": ("path/to/test.csv", 1000000, 300, 0, 150),
    "4stems": ("path/to/val.csv", 1500000, 600, 3, 300),
    "5stems": ("path/to/test.csv", 2500000, 600, 8, 300),
}
_DESCRIPTIONS = {
    "2stems": "Spleeter 2 stems (Deezer): vocals, accompaniment",
    "4stems": "Spleeter 4 stems (Deezer): vocals, drums, bass, other",
    "5stems": "Spleeter 5 stems (Deezer): vocals, piano, drums, bass, other",
}


def embedded_names() -> list[str]:
    """The Spleeter model names this module knows: ``spleeter:2stems`` ... ``spleeter:5stems-16kHz``."""
    return [f"spleeter:{base}{suffix}" for suffix in ("", "-16kHz") for base in _INSTRUMENTS]


def embedded_config(name: str) -> dict[str, Any]:
    """Spleeter's embedded config (``resources/<name>.json``) for ``spleeter:2stems``, ``4stems-16kHz``, ..."""
    short = name.split(":", 1)[1] if name.startswith("spleeter:") else name
    base, _, variant = short.partition("-")
    if base not in _INSTRUMENTS or variant not in ("", "16kHz"):
        raise ConfigError(f"{name!r}: not a Spleeter model name (known: {', '.join(embedded_names())})")
    validation_csv, steps, throttle, seed, save_steps = _TRAINING[base]
    params: dict[str, Any] = {}
    if base != "2stems":
        params = {"conv_activation": "ELU", "deconv_activation": "ELU"}
    return {
        "train_csv": "path/to/train.csv",
        "validation_csv": validation_csv,
        "model_dir": base,
        "mix_name": "mix",
        "instrument_list": list(_INSTRUMENTS[base]),
        "sample_rate": 44100,
        "frame_length": 4096,
        "frame_step": 1024,
        "T": 512,
        "F": 1536 if variant else 1024,
        "n_channels": 2,
        "separation_exponent": 2,
        "mask_extension": "zeros",
        "learning_rate": 1e-4,
        "batch_size": 4,
        "training_cache": "training_cache",
        "validation_cache": "validation_cache",
        "train_max_steps": steps,
        "throttle_secs": throttle,
        "random_seed": seed,
        "save_checkpoints_steps": save_steps,
        "save_summary_steps": 5,
        "model": {"type": "unet.softmax_unet" if base == "5stems" else "unet.unet", "params": params},
    }


def _load_spleeter_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    text = str(config)
    if text.startswith("spleeter:") or text in {name.split(":", 1)[1] for name in embedded_names()}:
        return embedded_config(text)
    path = Path(text).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read Spleeter config ({error})") from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


_MODEL_TYPES = {"unet.unet": "sigmoid", "unet.softmax_unet": "softmax"}


def _conv_activation(name: Any) -> str:
    # Spleeter's _get_conv_activation_layer: literal strings, anything else is LeakyReLU(0.2).
    return {"ReLU": "relu", "ELU": "elu"}.get(name, "leaky_relu") if isinstance(name, str) else "leaky_relu"


def _deconv_activation(name: Any) -> str:
    # Spleeter's _get_deconv_activation_layer: literal strings, anything else is ReLU.
    return {"LeakyReLU": "leaky_relu", "ELU": "elu"}.get(name, "relu") if isinstance(name, str) else "relu"


def spleeter_model_config(
    config: Mapping[str, Any] | str | Path, name: str = "", filters: list[int] | None = None
) -> ModelConfig:
    """The unet-sep :class:`ModelConfig` equivalent to a Spleeter config (dict, JSON path or embedded name).

    ``filters`` overrides ``model.params.conv_n_filters`` (default Spleeter's ``[16, 32, 64, 128, 256, 512]``).
    """
    source = config if isinstance(config, (str, Path)) else None
    spleeter = _load_spleeter_config(config)
    where = f"Spleeter config {str(source)!r}" if source is not None else "Spleeter config"
    try:
        model = spleeter.get("model", {})
        model_type = str(model.get("type", ""))
        short_type = model_type.removeprefix("spleeter.model.functions.")
        if short_type not in _MODEL_TYPES:
            raise ConfigError(
                f"{where}: model.type {model_type!r} is not supported (only {', '.join(_MODEL_TYPES)})"
            )
        params = model.get("params") or {}
        if filters is None:
            filters = list(params.get("conv_n_filters", DEFAULT_FILTERS))
        filters = [int(f) for f in filters]
        if len(filters) < 6:
            raise ConfigError(f"{where}: conv_n_filters needs 6 entries (Spleeter's U-Net has 6 levels), got {filters}")
        filters = filters[:6]  # Spleeter's apply_unet reads conv_n_filters[0..5] only
        stems = [str(s) for s in spleeter["instrument_list"]]
        result = ModelConfig(
            stems=stems,
            sample_rate=int(spleeter["sample_rate"]),
            n_channels=int(spleeter.get("n_channels", 2)),
            frequency_bins=int(spleeter["F"]),
            segment_frames=int(spleeter["T"]),
            mask_activation=_MODEL_TYPES[short_type],
            separation_exponent=float(spleeter.get("separation_exponent", 2)),
            # unet-sep's full-band default; Spleeter's own setting (zeros above F) is kept in the provenance
            # and selected at run time for Spleeter-exact output (--mask-extension zeros).
            mask_extension="last",
            stft=STFTConfig(n_fft=int(spleeter["frame_length"]), hop_length=int(spleeter["frame_step"])),
            unet=UNetConfig(
                filters=filters,
                kernel_size=5,
                conv_activation=_conv_activation(params.get("conv_activation")),
                deconv_activation=_deconv_activation(params.get("deconv_activation")),
                dropout=0.5,
                dropout_layers=3,
                batchnorm_eps=1e-3,  # Keras BatchNormalization default
                batchnorm_momentum=0.01,  # Keras momentum 0.99
            ),
            name=name,
            provenance={
                "source": "spleeter",
                "description": "Spleeter (Deezer) model converted from its TensorFlow checkpoint by unet-sep",
                "spleeter_model_dir": spleeter.get("model_dir"),
                "spleeter_model_type": model_type,
                "spleeter_model_params": params,
                "spleeter_mask_extension": str(spleeter.get("mask_extension", "zeros")),
                "license": "Spleeter models: MIT (Deezer)",
            },
        )
    except KeyError as error:
        raise ConfigError(f"{where}: missing key {error.args[0]!r}") from error
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}") from error
    result.validate()
    return result


# =========================================================================================================
# Variable mapping
# =========================================================================================================


def _keras(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def _variable_plan(n_unets: int, depth: int = 6) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """``{TF variable: (torch name, kind)}`` plus the variables checked and dropped (unused BN)."""
    mapping: dict[str, tuple[str, str]] = {}
    dropped: set[str] = set()
    convs, deconvs, bns = depth + 1, depth, 2 * depth
    bn_fields = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))
    for k in range(n_unets):
        prefix = f"unets.{k}"
        for i in range(depth):
            conv = _keras("conv2d", convs * k + i)
            mapping[f"{conv}/kernel"] = (f"{prefix}.encoder.{i}.conv.weight", "conv")
            mapping[f"{conv}/bias"] = (f"{prefix}.encoder.{i}.conv.bias", "vector")
            bn = _keras("batch_normalization", bns * k + i)
            for tf_name, torch_name in bn_fields:
                if i < depth - 1:
                    mapping[f"{bn}/{tf_name}"] = (f"{prefix}.encoder.{i}.bn.{torch_name}", "vector")
                else:  # BN after the last encoder conv: built by Spleeter, never used
                    dropped.add(f"{bn}/{tf_name}")
        final = _keras("conv2d", convs * k + depth)
        mapping[f"{final}/kernel"] = (f"{prefix}.mask_conv.weight", "conv")
        mapping[f"{final}/bias"] = (f"{prefix}.mask_conv.bias", "vector")
        for i in range(depth):
            deconv = _keras("conv2d_transpose", deconvs * k + i)
            mapping[f"{deconv}/kernel"] = (f"{prefix}.decoder.{i}.deconv.weight", "deconv")
            mapping[f"{deconv}/bias"] = (f"{prefix}.decoder.{i}.deconv.bias", "vector")
            bn = _keras("batch_normalization", bns * k + depth + i)
            for tf_name, torch_name in bn_fields:
                mapping[f"{bn}/{tf_name}"] = (f"{prefix}.decoder.{i}.bn.{torch_name}", "vector")
    return mapping, dropped


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _name_list(names: list[str], limit: int = 12, sort: bool = True) -> str:
    if sort:
        names = sorted(names, key=_natural)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def spleeter_state_dict(variables: Mapping[str, np.ndarray], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Map Spleeter checkpoint variables onto the state dict of ``StemsNet(config)``.

    Raises :class:`SpleeterCheckpointError` naming every unknown, missing or mis-shaped variable.
    """
    if config.unet.depth != 6:
        raise SpleeterCheckpointError(f"Spleeter's U-Net has 6 levels; the config has {config.unet.depth}")
    if config.unet.kernel_size != 5:
        raise SpleeterCheckpointError(f"Spleeter's U-Net uses 5x5 kernels; the config has {config.unet.kernel_size}")
    mapping, dropped = _variable_plan(len(config.stems))
    expected = StemsNet(config).state_dict()
    names = set(variables)
    allowed = set(mapping) | dropped | {"global_step"}
    unknown = sorted(names - allowed)
    missing = sorted((set(mapping) | dropped) - names)
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown variable(s): {_name_list(unknown)}")
    if missing:
        problems.append(f"{len(missing)} missing variable(s): {_name_list(missing)}")
    if problems:
        kernels = sum(1 for n in names if re.fullmatch(r"conv2d(_\d+)?/kernel", n))
        hint = f" (the checkpoint has {kernels} Conv2D kernels, {kernels / 7:g} U-Net(s) worth)" if kernels % 7 == 0 else ""
        raise SpleeterCheckpointError(
            f"checkpoint does not match a {len(config.stems)}-stem Spleeter U-Net ({', '.join(config.stems)}){hint}: "
            + "; ".join(problems)
        )
    state: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for tf_name, (torch_name, kind) in mapping.items():
        value = np.asarray(variables[tf_name])
        if not np.issubdtype(value.dtype, np.floating):
            mismatched.append(f"{tf_name} has dtype {value.dtype}, expected float")
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if kind in ("conv", "deconv"):
            if tensor.ndim != 4:
                mismatched.append(f"{tf_name} {list(value.shape)} (expected a 4-d kernel)")
                continue
            # Conv2D HWIO [kh, kw, in, out] -> [out, in, kh, kw]; Conv2DTranspose [kh, kw, out, in] ->
            # ConvTranspose2d [in, out, kh, kw]: the same permutation in both cases.
            tensor = tensor.permute(3, 2, 0, 1).contiguous()
        target = tuple(expected[torch_name].shape)
        if tuple(tensor.shape) != target:
            want = list(target) if kind == "vector" else [target[2], target[3], target[1], target[0]]
            mismatched.append(f"{tf_name} {list(value.shape)} (expected {want})")
            continue
        state[torch_name] = tensor
    unused_channels = config.unet.filters[-1]
    for tf_name in sorted(dropped):
        if tuple(np.shape(variables[tf_name])) != (unused_channels,):
            mismatched.append(f"{tf_name} {list(np.shape(variables[tf_name]))} (expected [{unused_channels}])")
    if "global_step" in variables and np.size(variables["global_step"]) != 1:
        mismatched.append(f"global_step {list(np.shape(variables['global_step']))} (expected a scalar)")
    if mismatched:
        stored = _filters_from_checkpoint(variables)
        hint = ""
        if stored is not None and stored != list(config.unet.filters):
            hint = f"; the checkpoint's encoder kernels say conv_n_filters = {stored}"
        kernels_first = sorted(mismatched, key=lambda text: ("/kernel" not in text.split(" ")[0], _natural(text)))
        raise SpleeterCheckpointError(
            f"{len(mismatched)} checkpoint variable(s) do not fit the config (filters {config.unet.filters}, "
            f"{config.n_channels} channels){hint}: {_name_list(kernels_first, sort=False)}"
        )
    for torch_name, tensor in expected.items():
        if torch_name.endswith("num_batches_tracked"):
            state[torch_name] = torch.zeros_like(tensor)
    leftover = sorted(set(expected) - set(state))
    if leftover:  # the U-Net code changed under us: never load a partially filled model
        raise SpleeterCheckpointError(f"no checkpoint variable maps to {_name_list(leftover)}")
    return state


def _filters_from_checkpoint(variables: Mapping[str, np.ndarray]) -> list[int] | None:
    """Spleeter's conv_n_filters as stored: the output widths of the first U-Net's six encoder kernels."""
    filters = []
    for i in range(6):
        kernel = variables.get(f"{_keras('conv2d', i)}/kernel")
        if kernel is None or np.ndim(kernel) != 4:
            return None
        filters.append(int(np.shape(kernel)[3]))
    return filters


def load_spleeter(
    path: str | Path,
    spleeter_config: Mapping[str, Any] | str | Path,
    name: str = "",
    verify: bool = True,
    infer_filters: bool = False,
) -> tuple[ModelConfig, StemsNet]:
    """Load a Spleeter TF checkpoint as an eval-mode :class:`StemsNet` with its :class:`ModelConfig`.

    Args:
        path: checkpoint folder (or prefix, ``checkpoint`` file, ``.index`` file).
        spleeter_config: Spleeter config as a dict, a JSON file or an embedded name ("spleeter:4stems").
        name: the unet-sep model name recorded in the config.
        verify: check the tensors' CRC32C.
        infer_filters: take the layer widths (``conv_n_filters``) from the checkpoint instead of the
            config; every other tensor must still fit them.
    """
    variables = read_tf_checkpoint(path, verify=verify)
    filters = _filters_from_checkpoint(variables) if infer_filters else None
    config = spleeter_model_config(spleeter_config, name=name, filters=filters)
    net = StemsNet(config)
    net.load_state_dict(spleeter_state_dict(variables, config), strict=True)
    step = variables.get("global_step")
    if step is not None and np.size(step) == 1:
        config.provenance["spleeter_global_step"] = int(np.asarray(step).reshape(()))
    return config, net.eval()


def convert_spleeter(
    path: str | Path,
    spleeter_config: Mapping[str, Any] | str | Path,
    out_folder: str | Path,
    name: str = "",
    verify: bool = True,
    infer_filters: bool = False,
) -> Path:
    """Convert a Spleeter checkpoint into a unet-sep model folder (``config.json`` + ``model.safetensors``).

    The converted config keeps Spleeter's settings except the mask extension above F, which is unet-sep's
    full-band default ("last"; Spleeter's own "zeros" is recorded in the provenance). For Spleeter's exact
    output use ``Separator(..., segmentation="spleeter", mask_extension="zeros")``.
    """
    config, net = load_spleeter(path, spleeter_config, name=name, verify=verify, infer_filters=infer_filters)
    return save_model(out_folder, net, config)


# =========================================================================================================
# Registry
# =========================================================================================================


def find_checkpoint_folder(root: Path) -> Path:
    """The folder of an extracted archive that holds the checkpoint (the root or a subfolder)."""
    candidates = sorted({p.parent for p in root.rglob("*.index")} | {p.parent for p in root.rglob("checkpoint")})
    if not candidates:
        raise TFCheckpointError("archive holds no TensorFlow checkpoint (no *.index or 'checkpoint' file)")
    if len(candidates) > 1:
        listed = ", ".join(str(c.relative_to(root)) or "." for c in candidates)
        raise TFCheckpointError(f"archive holds several checkpoint folders ({listed})")
    return candidates[0]


def _convert_release(name: str, archive: Path, destination: Path) -> None:
    """``ModelEntry.convert`` for a Spleeter release archive: extract, read, map, save."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".spleeter-", dir=destination.parent) as tmp:
        extract_tar(Path(archive), Path(tmp))
        folder = find_checkpoint_folder(Path(tmp))
        logger.info("converting Spleeter checkpoint %s for %s", folder.relative_to(tmp), name)
        # The archives do not carry conv_n_filters; the checkpoint's kernels are the authority for the layer
        # widths (Spleeter's default for Deezer's releases) and every other tensor must fit them.
        config, net = load_spleeter(folder, embedded_config(name), name=name, infer_filters=True)
        config.provenance["url"] = _release_url(_archive_base(name))
        save_model(destination, net, config)


def _archive_base(name: str) -> str:
    return name.split(":", 1)[1].split("-", 1)[0]


def _release_url(base: str) -> str:
    root = os.environ.get(URL_ENV) or RELEASE_URL
    return f"{root.rstrip('/')}/{base}.tar.gz"


def registry_entries() -> list[ModelEntry]:
    """The ``spleeter:*`` names for :func:`unet_sep.weights.registry.registered_models`.

    Reads ``UNET_SEP_SPLEETER_URL`` (release base URL) and ``UNET_SEP_SPLEETER_SHA256_<ARCHIVE>`` (expected
    sha256, e.g. ``..._2STEMS``) on every call. The -16kHz names share their base model's archive.
    """
    entries = []
    for name in embedded_names():
        base = _archive_base(name)
        sha256 = os.environ.get(SHA256_ENV_PREFIX + base.upper()) or RELEASE_SHA256[base]
        config = spleeter_model_config(embedded_config(name), name=name)
        entries.append(
            ModelEntry(
                name=name,
                description=f"{_DESCRIPTIONS[base]}; U-Nets see 0-{config.band_hz / 1000:.1f} kHz "
                            f"(F={config.frequency_bins}); converted from TensorFlow on first use",
                stems=_INSTRUMENTS[base],
                sample_rate=config.sample_rate,
                band_hz=config.band_hz,
                url=_release_url(base),
                sha256=sha256.strip().lower(),
                convert=functools.partial(_convert_release, name),
            )
        )
    return entries
