"""The multichannel Wiener filter: the torch filter against sigsep's norbert (the reference Spleeter calls), the
Spleeter-exact mode against Spleeter 2.4.2's own ``MWF=True`` output, the bounded statistics window of the default
mode, and the option through the API, the stream, the file pipeline and the CLI.

Spleeter's MWF outputs are made by tests/tools/make_spleeter_mwf.py (Spleeter's own environment); the test that
needs them skips, naming the command, where they have not been made. CUDA tests skip where there is no CUDA.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import SHARED, music_like
from unet_sep import Separator
from unet_sep.dsp import wiener
from unet_sep.dsp.measures import snr_db
from unet_sep.errors import SettingError
from unet_sep.weights import spleeter as sp
from unet_sep.weights.checkpoint import load_model

norbert = pytest.importorskip("norbert", reason="norbert (sigsep's numpy Wiener filter) is a test dependency: "
                                                "pip install -e '.[test]'")

REF = SHARED / "data" / "spleeter-ref"
MWF = Path(__file__).resolve().parent / "data" / "spleeter-mwf"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _random_spectrograms(channels: int, seed: int, stems: int = 3, frames: int = 70, bins: int = 33):
    """norbert's layout: magnitudes v [frames, bins, channels, stems], mixture x [frames, bins, channels]."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(frames, bins, channels)) + 1j * rng.normal(size=(frames, bins, channels))) * 30
    v = rng.uniform(0.0, 5.0, size=(frames, bins, channels, stems)) * rng.uniform(0, 1, size=(1, bins, 1, stems))
    return v.astype(np.float32), x.astype(np.complex64)


def _torch_filter(v: np.ndarray, x: np.ndarray, iterations: int, device: str = "cpu") -> np.ndarray:
    mixture = torch.from_numpy(x).permute(2, 1, 0).to(device)  # [C, F, T]
    estimates = torch.from_numpy(v).permute(3, 2, 1, 0).to(device)  # [S, C, F, T]
    stems = wiener.wiener(wiener.softmask(estimates) * mixture, mixture, iterations)
    return stems.permute(3, 2, 1, 0).cpu().numpy()


def _complex_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return snr_db(np.stack([reference.real, reference.imag]), np.stack([estimate.real, estimate.imag]))


@pytest.mark.parametrize("channels", [2, 1, 3])
@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_the_torch_filter_matches_norbert(channels, iterations):
    v, x = _random_spectrograms(channels, seed=10 * channels + iterations)
    expected = norbert.wiener(v.copy(), x.copy(), iterations=iterations)
    got = _torch_filter(v, x, iterations)
    assert got.shape == expected.shape
    agreement = _complex_snr(expected, got)
    assert agreement > 80.0, agreement
    if iterations:  # the EM really changes the stems: the check above is not about the softmask alone
        assert _complex_snr(expected, norbert.wiener(v.copy(), x.copy(), iterations=0)) < 40.0


@pytest.mark.parametrize("channels", [2, 1, 3])
@pytest.mark.parametrize("iterations", [1, 2])
def test_kept_frames_are_those_of_the_whole_result(channels, iterations):
    """``keep``: the statistics still span every frame, only the last iteration's filtering is cut to the kept
    frames (several of the filter's chunks of frames, starting inside one)."""
    v, x = _random_spectrograms(channels, seed=7 + channels, frames=700)
    mixture = torch.from_numpy(x).permute(2, 1, 0)
    stems = wiener.softmask(torch.from_numpy(v).permute(3, 2, 1, 0)) * mixture
    whole = wiener.wiener(stems, mixture, iterations)
    kept = wiener.wiener(stems, mixture, iterations, keep=slice(100, 650))
    assert kept.shape == whole[..., 100:650].shape
    assert _complex_snr(whole[..., 100:650].numpy(), kept.numpy()) > 120.0
    assert torch.equal(wiener.wiener(stems, mixture, 0, keep=slice(100, 650)), stems[..., 100:650])


def _spleeter_mwf_refs() -> dict:
    if not (REF / "manifest.json").is_file():
        pytest.skip(f"Spleeter reference fixtures not found at {REF} (../shared is absent)")
    if not (MWF / "manifest.json").is_file():
        pytest.skip(f"Spleeter's MWF=True outputs not found at {MWF}: make them with Spleeter's environment, "
                    "../shared/tools/spleeter_bench/setup.sh VENV && VENV/bin/python tests/tools/make_spleeter_mwf.py")
    return json.loads((REF / "manifest.json").read_text())


@pytest.mark.parametrize("model", ["2stems", "4stems", "5stems", "2stems-16kHz"])
def test_spleeter_exact_mode_with_one_iteration_is_spleeters_mwf(model):
    info = _spleeter_mwf_refs()["models"][model]
    config, net = sp.load_spleeter(REF / info["checkpoint_dir"], REF / info["config"], name=f"spleeter:{model}")
    start, stop = info["input_slice"]
    mixture = np.load(REF / "input.npy")[start:stop].T
    separator = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros",
                          wiener_iterations=1)
    stems = separator.separate(mixture, 44100)
    snrs = {stem: snr_db(np.load(MWF / model / f"out_{stem}.npy").T, stems[stem]) for stem in config.stems}
    without = {stem: snr_db(np.load(REF / model / f"out_{stem}.npy").T, stems[stem]) for stem in config.stems}
    print(f"{model}: SNR vs Spleeter MWF=True (dB) {snrs}")
    assert min(snrs.values()) >= 70.0, snrs
    assert max(without.values()) < 30.0, without  # MWF changed the stems: the references tell them apart


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(tiny_model)


def test_zero_iterations_is_the_ratio_mask_output_and_a_config_can_ask_for_more(loaded):
    config, net = loaded
    audio = music_like(8.0, 44100, seed=3)
    plain = Separator(net, config, device="cpu").separate(audio, 44100)
    zero = Separator(net, config, device="cpu", wiener_iterations=0).separate(audio, 44100)
    one = Separator(net, config, device="cpu", wiener_iterations=1).separate(audio, 44100)
    filtering = dataclasses.replace(config, wiener_iterations=1)
    by_config = Separator(net, filtering, device="cpu").separate(audio, 44100)
    overridden = Separator(net, filtering, device="cpu", wiener_iterations=0).separate(audio, 44100)
    for stem in plain:
        assert np.array_equal(plain[stem], zero[stem]) and np.array_equal(plain[stem], overridden[stem])
        assert np.array_equal(one[stem], by_config[stem])
        assert snr_db(plain[stem], one[stem]) < 40.0  # the filter did something
    # the stems still add up to the mixture: the Wiener gains sum to the identity over stems
    assert snr_db(audio, sum(one.values())) > 60.0


def test_a_window_that_covers_the_song_is_the_whole_track_and_a_bounded_one_stays_close(loaded):
    config, net = loaded
    audio = music_like(25.0, 44100, seed=4)  # 1081 frames: the default window gives 3 blocks
    whole = Separator(net, config, device="cpu", wiener_iterations=1, wiener_window=0).separate(audio, 44100)
    covering = Separator(net, config, device="cpu", wiener_iterations=1, wiener_window=4000).separate(audio, 44100)
    bounded = Separator(net, config, device="cpu", wiener_iterations=1).separate(audio, 44100)  # 1024 frames
    small = Separator(net, config, device="cpu", wiener_iterations=1, wiener_window=64).separate(audio, 44100)
    for stem in whole:
        assert snr_db(whole[stem], covering[stem]) > 100.0
        close, closer = snr_db(whole[stem], small[stem]), snr_db(whole[stem], bounded[stem])
        assert closer > 30.0 and closer > close, (stem, close, closer)


def test_the_stream_gives_the_same_stems_whatever_its_blocks(loaded):
    config, net = loaded
    separator = Separator(net, config, device="cpu", wiener_iterations=2, wiener_window=256)
    audio = music_like(10.0, 44100, seed=5)
    one_block = np.concatenate(list(separator.stream([audio[None]], 44100)), axis=-1)
    for size in (1000, 44100 * 2 + 17):
        blocks = [audio[None, :, i : i + size] for i in range(0, audio.shape[1], size)]
        out = np.concatenate(list(separator.stream(blocks, 44100)), axis=-1)
        assert out.shape == one_block.shape == (2, 1, 2, audio.shape[1])
        assert np.array_equal(out, one_block), size


def test_the_file_pipeline_filters_each_song_as_alone(tmp_path, loaded):
    config, net = loaded
    separator = Separator(net, config, device="cpu", wiener_iterations=1, wiener_window=256, batch_size=3)
    songs = []
    for index, seconds in enumerate((7.0, 9.5, 3.0)):
        path = tmp_path / f"song{index}.wav"
        sf.write(path, music_like(seconds, 44100, seed=20 + index).T, 44100, subtype="FLOAT")
        songs.append(path)
    events = separator.separate_files(songs, tmp_path / "out")
    assert all(event.error is None for event in events)
    for song in songs:
        audio = sf.read(song, dtype="float32")[0].T
        alone = separator.separate(audio, 44100)
        for stem in config.stems:
            written = sf.read(tmp_path / "out" / song.stem / f"{stem}.wav", dtype="float32")[0].T
            assert snr_db(alone[stem], written) > 100.0, (song.name, stem)


def test_wrong_settings_name_the_option(loaded):
    config, net = loaded
    for settings, option in (({"wiener_iterations": -1}, "wiener_iterations"),
                             ({"wiener_iterations": 11}, "wiener_iterations"),
                             ({"wiener_iterations": 1.5}, "wiener_iterations"),
                             ({"wiener_window": 2}, "wiener_window"),
                             ({"wiener_window": -8}, "wiener_window")):
        with pytest.raises(SettingError) as error:
            Separator(net, config, device="cpu", **settings)
        assert error.value.setting == option


def test_the_cli_option(tmp_path, tiny_model):
    song = tmp_path / "song.wav"
    audio = music_like(6.0, 44100, seed=6)
    sf.write(song, audio.T, 44100, subtype="FLOAT")
    # On the CPU, as its reference: on a GPU the default mode's TF32 convolutions agree with the CPU at about 74 dB.
    command = [sys.executable, "-m", "unet_sep", "separate", str(song), "--model", str(tiny_model), "--device", "cpu",
               "--out"]
    done = subprocess.run(command + [str(tmp_path / "a"), "--wiener-iterations", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = Separator.from_pretrained(tiny_model, device="cpu", wiener_iterations=1).separate(audio, 44100)
    vocals = sf.read(tmp_path / "a" / "song" / "vocals.wav", dtype="float32")[0].T
    assert snr_db(expected["vocals"], vocals) > 100.0
    bad = subprocess.run(command + [str(tmp_path / "b"), "--wiener-iterations", "12"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--wiener-iterations" in lines[0], bad.stderr
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.wav"))


@cuda
@pytest.mark.parametrize("channels", [2, 1])
def test_the_filter_on_cuda_matches_norbert(channels):
    v, x = _random_spectrograms(channels, seed=99)
    for iterations in (0, 1, 2):
        expected = norbert.wiener(v.copy(), x.copy(), iterations=iterations)
        assert _complex_snr(expected, _torch_filter(v, x, iterations, device="cuda")) > 80.0


@cuda
def test_cuda_separation_with_the_filter_matches_the_cpu(tiny_model):
    audio = music_like(12.0, 44100, seed=7)
    on_cpu = Separator.from_pretrained(tiny_model, device="cpu", wiener_iterations=2).separate(audio, 44100)
    on_gpu = Separator.from_pretrained(tiny_model, device="cuda", wiener_iterations=2).separate(audio, 44100)
    for stem, expected in on_cpu.items():
        assert snr_db(expected, on_gpu[stem]) > 60.0
