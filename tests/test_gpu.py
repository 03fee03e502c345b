"""The GPU paths (CUDA, Apple's MPS) against the CPU. Skipped, with the reason, where no such device exists;
run `python -m pytest -q tests/test_gpu.py` on a GPU machine (speed: benchmarks/spleeter_speed.py --device cuda)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import music_like
from unet_sep import Separator
from unet_sep.dsp.measures import snr_db

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
MPS_AVAILABLE = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@cuda
def test_cuda_matches_the_cpu(tiny_model):
    audio = music_like(12.0, 44100, 2, seed=21)
    on_cpu = Separator.from_pretrained(tiny_model, device="cpu").separate(audio, 44100)
    on_gpu = Separator.from_pretrained(tiny_model, device="cuda").separate(audio, 44100)
    for stem, expected in on_cpu.items():
        assert on_gpu[stem].shape == expected.shape
        assert snr_db(expected, on_gpu[stem]) > 60.0


@cuda
def test_cuda_exact_mode_matches_the_cpu_to_float32_rounding(tiny_model):
    """Spleeter-exact mode runs the U-Nets' float32 convolutions in full float32 on the GPU (cuDNN's TF32 default
    would give about 74 dB for this model, emulated in benchmarks/tf32.py): CUDA and the CPU agree as two float32
    implementations do."""
    audio = music_like(12.0, 44100, 2, seed=25)
    exact = dict(segmentation="spleeter", mask_extension="zeros")
    on_cpu = Separator.from_pretrained(tiny_model, device="cpu", **exact).separate(audio, 44100)
    on_gpu = Separator.from_pretrained(tiny_model, device="cuda", **exact).separate(audio, 44100)
    for stem, expected in on_cpu.items():
        assert snr_db(expected, on_gpu[stem]) > 100.0


@cuda
def test_cuda_torch_in_torch_out_on_the_device(tiny_model):
    audio = torch.from_numpy(music_like(3.0, 44100, 2, seed=22)).cuda()
    stems = Separator.from_pretrained(tiny_model, device="cuda").separate(audio, 44100)
    assert all(s.device.type == "cuda" and s.shape == audio.shape for s in stems.values())


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_reduced_precision_close_to_fp32(tiny_model, precision):
    audio = music_like(12.0, 44100, 2, seed=23)
    reference = Separator.from_pretrained(tiny_model, device="cuda").separate(audio, 44100)
    reduced = Separator.from_pretrained(tiny_model, device="cuda", precision=precision).separate(audio, 44100)
    for stem, expected in reference.items():
        assert snr_db(expected, reduced[stem]) > 25.0


@cuda
def test_cuda_pipeline_matches_the_cpu(tmp_path, tiny_model):
    songs = []
    for i, seconds in enumerate([2.5, 9.0, 4.2]):
        path = tmp_path / f"song{i}.wav"
        sf.write(path, music_like(seconds, 44100, 2, seed=30 + i).T, 44100, subtype="FLOAT")
        songs.append(path)
    cpu = Separator.from_pretrained(tiny_model, device="cpu")
    gpu = Separator.from_pretrained(tiny_model, device="cuda", batch_size=8)
    assert all(e.kind == "done" for e in cpu.separate_files(songs, tmp_path / "cpu", bit_depth="float"))
    assert all(e.kind == "done" for e in gpu.separate_files(songs, tmp_path / "gpu", bit_depth="float"))
    for song in songs:
        for stem in cpu.stems:
            expected, _ = sf.read(tmp_path / "cpu" / song.stem / f"{stem}.wav")
            got, _ = sf.read(tmp_path / "gpu" / song.stem / f"{stem}.wav")
            assert snr_db(expected, got) > 60.0


@pytest.mark.skipif(not MPS_AVAILABLE, reason="no Apple MPS device on this machine")
def test_mps_works_or_falls_back_to_the_cpu(tiny_model):
    audio = music_like(3.0, 44100, 2, seed=24)
    separator = Separator.from_pretrained(tiny_model, device="mps")
    assert separator.device.type in ("mps", "cpu")
    reference = Separator.from_pretrained(tiny_model, device="cpu").separate(audio, 44100)
    stems = separator.separate(audio, 44100)
    for stem, expected in reference.items():
        assert snr_db(expected, np.asarray(stems[stem])) > 60.0
