"""The TensorFlow checkpoint reader on its own (no model mapping): masked CRC32C, index and data decoding, the
forms of a checkpoint path, and the errors for damaged or unsupported checkpoints.

Fixtures: TF-written checkpoints in ../shared/data/spleeter-ref (those tests skip with a reason when it is
absent) and checkpoints written by tests/tf_bundle.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from tf_bundle import require_ref, write_bundle
from unet_sep.weights.tf_checkpoint import (
    TFCheckpointError,
    checkpoint_variables,
    find_checkpoint_folder,
    masked_crc32c,
    read_tf_checkpoint,
)


@pytest.fixture(scope="module")
def ref() -> Path:
    return require_ref()


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_masked_crc32c_known_values() -> None:
    assert google_crc32c.value(b"") == 0
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    data = np.random.default_rng(1).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    chained = 0
    for start in range(0, len(data), 10_000):  # what the reader does for string tensors
        chained = google_crc32c.extend(chained, data[start : start + 10_000])
    assert google_crc32c.value(data) == chained
    assert masked_crc32c(b"") == _masked(0) == 0xA282EAD8
    assert masked_crc32c(b"123456789") == ((((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    assert masked_crc32c(data) == _masked(chained)
    assert masked_crc32c(bytearray(data)) == masked_crc32c(memoryview(data)) == _masked(chained)


@pytest.mark.parametrize("model", ["2stems", "4stems", "5stems"])
def test_reader_matches_variables_json(ref: Path, model: str) -> None:
    expected = json.loads((ref / model / "variables.json").read_text())
    variables = read_tf_checkpoint(ref / model)
    assert {name: list(array.shape) for name, array in variables.items()} == expected
    assert variables["global_step"].dtype == np.int64
    assert all(a.dtype == np.float32 for n, a in variables.items() if n != "global_step")
    index_only = checkpoint_variables(ref / model / "model.index")
    assert {name: list(shape) for name, (_, shape) in index_only.items()} == expected


def test_reader_rejects_corrupted_data_and_compressed_blocks(ref: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(ref / "2stems", bad, ignore=shutil.ignore_patterns("out_*"))
    data = bytearray((bad / "model.data-00000-of-00001").read_bytes())
    data[len(data) // 2] ^= 0x40
    (bad / "model.data-00000-of-00001").chmod(0o644)
    (bad / "model.data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(TFCheckpointError, match="CRC32C mismatch"):
        read_tf_checkpoint(bad)
    assert len(read_tf_checkpoint(bad, verify=False)) == 149

    snappy = write_bundle(tmp_path / "snappy", {"global_step": np.array(1, np.int64)}, compression=1)
    with pytest.raises(TFCheckpointError, match="snappy-compressed"):
        read_tf_checkpoint(snappy)


def test_every_stored_dtype_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    strings = np.array([b"", b"conv2d/kernel", bytes(range(256)) * 3, b"\x00"], dtype=object).reshape(2, 2)
    tensors = {
        "float32": rng.standard_normal((3, 4, 5)).astype(np.float32),
        "float64": rng.standard_normal(7),
        "float16": rng.standard_normal((2, 3)).astype(np.float16),
        "int32": rng.integers(-9, 9, (4, 1), dtype=np.int32),
        "int64": np.array(123456789012, np.int64),
        "uint8": rng.integers(0, 256, 9, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "strings": strings,
    }
    folder = write_bundle(tmp_path / "all", tensors)
    variables = read_tf_checkpoint(folder)
    assert sorted(variables) == sorted(tensors)
    for name, expected in tensors.items():
        assert variables[name].dtype == expected.dtype and variables[name].shape == expected.shape, name
        assert np.array_equal(variables[name], expected), name
    assert checkpoint_variables(folder)["strings"] == ("string", (2, 2))
    assert checkpoint_variables(folder)["float16"] == ("float16", (2, 3))

    data = bytearray((folder / "model.data-00000-of-00001").read_bytes())
    data[data.index(bytes(range(256)))] ^= 0x01  # the first byte of one string
    (folder / "model.data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(TFCheckpointError, match=r"variable 'strings': CRC32C mismatch"):
        read_tf_checkpoint(folder)
    assert read_tf_checkpoint(folder, verify=False)["strings"][1, 0][:3] == b"\x01\x01\x02"


def test_a_checkpoint_is_found_from_each_of_its_names(tmp_path: Path) -> None:
    tensors = {"step": np.array(5, np.int64)}
    folder = write_bundle(tmp_path / "run" / "sub", tensors)
    for path in (folder, folder / "checkpoint", folder / "model.index", folder / "model"):
        assert read_tf_checkpoint(path)["step"] == 5, path
    (folder / "checkpoint").unlink()  # a single index is enough
    assert read_tf_checkpoint(folder)["step"] == 5
    assert find_checkpoint_folder(tmp_path / "run") == folder

    shutil.copy(folder / "model.index", folder / "other.index")
    with pytest.raises(TFCheckpointError, match=r"several checkpoints \(model.index, other.index\)"):
        read_tf_checkpoint(folder)
    with pytest.raises(TFCheckpointError, match="no TensorFlow checkpoint here"):
        read_tf_checkpoint(tmp_path)
    (folder / "model.data-00000-of-00001").unlink()
    with pytest.raises(TFCheckpointError, match="missing data file model.data-00000-of-00001"):
        read_tf_checkpoint(folder / "model.index")

    write_bundle(tmp_path / "run" / "second", tensors)
    with pytest.raises(TFCheckpointError, match="several checkpoint folders"):
        find_checkpoint_folder(tmp_path / "run")
    with pytest.raises(TFCheckpointError, match="archive holds no TensorFlow checkpoint"):
        find_checkpoint_folder(tmp_path / "run" / "sub" / "nothing-here")


def test_truncated_files_are_named(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "model", {"weights": np.arange(64, dtype=np.float32)})
    data = folder / "model.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(TFCheckpointError, match=r"variable 'weights': stored bytes run past the end of the data file"):
        read_tf_checkpoint(folder)
    (folder / "model.index").write_bytes(b"\0" * 20)
    with pytest.raises(TFCheckpointError, match=r"model.index: too short to be a checkpoint index \(20 bytes\)"):
        read_tf_checkpoint(folder)
