"""Test helpers: a small, real TF "V2" checkpoint writer (LevelDB table + data file), independent of the reader,
and the Spleeter-format reference checkpoints of ../shared/data/spleeter-ref.
"""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from conftest import SHARED

REF = SHARED / "data" / "spleeter-ref"
CHECKPOINT_FILES = ("checkpoint", "model.index", "model.data-00000-of-00001")

# tensorflow/core/framework/types.proto
_DT = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.uint8): 4,
       np.dtype(np.int64): 9, np.dtype(np.bool_): 10, np.dtype(np.float16): 19}
DT_STRING = 7


def require_ref() -> Path:
    """The reference folder, or a skip with the reason when the shared data is absent."""
    if not (REF / "manifest.json").is_file():
        pytest.skip(f"Spleeter reference fixtures not found at {REF} (shared data is absent)")
    return REF


def masked(data: bytes) -> int:
    """LevelDB's masked CRC32C, written out here so the writer does not use the reader's code."""
    crc = google_crc32c.value(bytes(data))
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if isinstance(payload, int):
        return key + (_varint(payload) if wire == 0 else payload.to_bytes(4, "little"))
    return key + _varint(len(payload)) + payload


def _block(pairs: list[tuple[bytes, bytes]], restart_interval: int = 4) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(pairs):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    for offset in restarts:
        out += offset.to_bytes(4, "little")
    return bytes(out + len(restarts).to_bytes(4, "little"))


def _stored(array: np.ndarray) -> tuple[int, bytes]:
    """(DataType, stored bytes) of a tensor; string tensors as tensor_bundle.cc's WriteStringTensor lays them out."""
    if array.dtype == object:
        values = [bytes(v) for v in array.reshape(-1)]
        lengths = struct.pack(f"<{len(values)}Q", *(len(v) for v in values))
        stored = b"".join(_varint(len(v)) for v in values) + masked(lengths).to_bytes(4, "little") + b"".join(values)
        return DT_STRING, stored
    return _DT[array.dtype], array.astype(array.dtype.newbyteorder("<")).tobytes()


def _entry_crc(array: np.ndarray, raw: bytes) -> int:
    """The entry's checksum: for strings it covers the lengths as uint64, their checksum, and the bytes."""
    if array.dtype != object:
        return masked(raw)
    values = [bytes(v) for v in array.reshape(-1)]
    lengths = struct.pack(f"<{len(values)}Q", *(len(v) for v in values))
    payload = b"".join(values)
    return masked(lengths + raw[len(raw) - len(payload) - 4 :])


def write_bundle(folder: Path, tensors: dict[str, np.ndarray], compression: int = 0) -> Path:
    """Write ``tensors`` as a TF V2 checkpoint ``folder/model`` (+ the ``checkpoint`` state file)."""
    folder.mkdir(parents=True, exist_ok=True)
    data, pairs = bytearray(), []
    for name in sorted(tensors):
        array = np.array(tensors[name], order="C")  # (np.ascontiguousarray would make a scalar 1-d)
        dtype, raw = _stored(array)
        shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in array.shape)
        entry = _field(1, 0, dtype) + _field(2, 2, shape) + _field(4, 0, len(data))
        entry += _field(5, 0, len(raw)) + _field(6, 5, _entry_crc(array, raw))
        pairs.append((name.encode(), entry))
        data += raw
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))
    pairs = [(b"", header)] + pairs
    table, index = bytearray(), []
    for start in range(0, len(pairs), 16):  # several data blocks, like a real (larger) index
        chunk = pairs[start : start + 16]
        contents = _block(chunk)
        index.append((chunk[-1][0], _varint(len(table)) + _varint(len(contents))))
        table += contents + bytes([compression]) + masked(contents + bytes([compression])).to_bytes(4, "little")
    handles = []
    for contents in (_block([]), _block(index, restart_interval=1)):
        handles.append(_varint(len(table)) + _varint(len(contents)))
        table += contents + b"\0" + masked(contents + b"\0").to_bytes(4, "little")
    footer = (handles[0] + handles[1]).ljust(40, b"\0") + (0xDB4775248B80FB57).to_bytes(8, "little")
    (folder / "model.index").write_bytes(bytes(table + footer))
    (folder / "model.data-00000-of-00001").write_bytes(bytes(data))
    (folder / "checkpoint").write_text('model_checkpoint_path: "model"\nall_model_checkpoint_paths: "model"\n')
    return folder
