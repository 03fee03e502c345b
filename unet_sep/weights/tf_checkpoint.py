"""TensorFlow "V2" checkpoints read without TensorFlow: ``checkpoint`` + ``<prefix>.index`` + ``<prefix>.data-*``.

The index is a LevelDB-format table (SSTable) whose values are ``BundleEntryProto`` messages; both are decoded
here with a minimal protobuf wire-format parser. Every index block's and every tensor's masked CRC32C is
verified (CRC32C by the ``google-crc32c`` package). Nothing here knows about any model: a model's variable
names are mapped elsewhere (e.g. :mod:`unet_sep.weights.spleeter`).

* :func:`read_tf_checkpoint`: ``{variable name: numpy array}`` of a checkpoint.
* :func:`checkpoint_variables`: ``{variable name: (dtype name, shape)}`` from the index alone.
* :func:`find_checkpoint_folder`: the folder of an extracted archive that holds the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import google_crc32c
import numpy as np

__all__ = ["TFCheckpointError", "checkpoint_variables", "find_checkpoint_folder", "masked_crc32c", "read_tf_checkpoint"]


class TFCheckpointError(ValueError):
    """A TensorFlow checkpoint that cannot be read; the message names the file and the problem."""


# =========================================================================================================
# Masked CRC32C (Castagnoli), as stored by LevelDB tables and TF tensor bundles
# =========================================================================================================

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _extend_crc32c(crc: int, data: bytes | bytearray | memoryview) -> int:
    """The CRC32C of the bytes behind ``crc`` followed by ``data`` (``crc`` = 0 starts afresh)."""
    # google-crc32c's C function reads only ``bytes``, not other buffers.
    return google_crc32c.extend(crc, data if isinstance(data, bytes) else bytes(data))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC32C of ``data`` that LevelDB tables and TF bundles store (rotated right 15, plus a constant)."""
    return _mask(_extend_crc32c(0, data))


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
        value: int | bytes
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
    actual = masked_crc32c(data[offset : end + 1])  # the checksum covers the contents and the type byte
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
        verify: check each tensor's masked CRC32C (on by default).

    Returns:
        ``{name: array}`` in the stored dtype and shape (string tensors as object arrays of bytes).
    """
    prefix = _checkpoint_prefix(path)
    num_shards, entries = _read_index(prefix)
    result: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        shards: dict[int, BinaryIO] = {}
        for entry in entries:
            if entry.shard >= num_shards:
                raise TFCheckpointError(f"{prefix}: variable {entry.name!r} is in shard {entry.shard} of {num_shards}")
            if entry.shard not in shards:
                shard_path = prefix.with_name(f"{prefix.name}.data-{entry.shard:05d}-of-{num_shards:05d}")
                if not shard_path.is_file():
                    raise TFCheckpointError(f"{prefix}: missing data file {shard_path.name}")
                shards[entry.shard] = stack.enter_context(shard_path.open("rb"))
            where = f"{prefix}: variable {entry.name!r}"
            result[entry.name] = _read_tensor(shards[entry.shard], entry, where, verify)
    return result


def _read_tensor(shard: BinaryIO, entry: _Entry, where: str, verify: bool) -> np.ndarray:
    """One variable's array from its data file, its CRC32C checked when ``verify``."""
    if entry.offset + entry.size > os.fstat(shard.fileno()).st_size:
        raise TFCheckpointError(f"{where}: stored bytes run past the end of the data file (truncated?)")
    shard.seek(entry.offset)
    raw = shard.read(entry.size)  # bytes: what the CRC32C reads without a copy
    if entry.dtype == _DT_STRING:
        return _decode_strings(raw, entry, where, verify)
    if verify and masked_crc32c(raw) != entry.crc:
        raise TFCheckpointError(f"{where}: CRC32C mismatch (data file corrupted or not this index's)")
    count = math.prod(entry.shape)
    if entry.dtype == _DT_BFLOAT16:
        array = _check_size(raw, count, 2, where).view("<u2").astype(np.uint32) << 16
        return array.view(np.float32).reshape(entry.shape)
    if entry.dtype not in _DTYPES:
        raise TFCheckpointError(f"{where}: unsupported dtype {entry.dtype_name()}")
    dtype = np.dtype(_DTYPES[entry.dtype])
    array = _check_size(raw, count, dtype.itemsize, where).view(dtype).reshape(entry.shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _check_size(raw: bytes, count: int, itemsize: int, where: str) -> np.ndarray:
    if len(raw) != count * itemsize:
        raise TFCheckpointError(f"{where}: {len(raw)} bytes stored, its shape and dtype need {count * itemsize}")
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _decode_strings(raw: bytes, entry: _Entry, where: str, verify: bool) -> np.ndarray:
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
    crc = _extend_crc32c(0, length_bytes)
    if verify and stored != _mask(crc):
        raise TFCheckpointError(f"{where}: string lengths fail their CRC32C check")
    crc = _extend_crc32c(crc, raw[pos : pos + 4])
    pos += 4
    if pos + sum(lengths) != len(raw):
        raise TFCheckpointError(f"{where}: string tensor holds {len(raw) - pos} bytes, its lengths say {sum(lengths)}")
    if verify and _mask(_extend_crc32c(crc, raw[pos:])) != entry.crc:
        raise TFCheckpointError(f"{where}: CRC32C mismatch (data file corrupted or not this index's)")
    values = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        values[i] = bytes(raw[pos : pos + length])
        pos += length
    return values.reshape(entry.shape)




def find_checkpoint_folder(root: Path) -> Path:
    """The folder of an extracted archive that holds the checkpoint (the root or a subfolder)."""
    candidates = sorted({p.parent for p in root.rglob("*.index")} | {p.parent for p in root.rglob("checkpoint")})
    if not candidates:
        raise TFCheckpointError("archive holds no TensorFlow checkpoint (no *.index or 'checkpoint' file)")
    if len(candidates) > 1:
        listed = ", ".join(str(c.relative_to(root)) or "." for c in candidates)
        raise TFCheckpointError(f"archive holds several checkpoint folders ({listed})")
    return candidates[0]
