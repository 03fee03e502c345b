"""The Python API at the edges a new user meets first: array layouts, sample types, errors that name files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import PEAK_MB, music_like
from unet_sep import Separator
from unet_sep.audio.decode import AudioDecodeError
from unet_sep.audio.resample import check_sample_rate
from unet_sep.errors import SettingError
from unet_sep.separate.stages import MAX_CHANNELS, InvalidAudioError


@pytest.fixture(scope="module")
def separator(tiny_model) -> Separator:
    return Separator.from_pretrained(tiny_model, device="cpu")


# ---- 1. a [samples, channels] array is refused before anything is allocated for it ----------------------------


@pytest.mark.parametrize("rate", [16000, 44100])
def test_soundfile_layout_is_one_clear_error(separator, rate):
    audio = np.random.default_rng(0).standard_normal((32000, 2)).astype("float32")  # soundfile's [samples, channels]
    with pytest.raises(InvalidAudioError, match=r"expected \[channels, samples\]; got \(32000, 2\).*transpose"):
        separator.separate(audio, rate)


def test_short_transposed_array_is_refused_too(separator):
    """40 'channels' of 2 samples: under the channel bound, but more channels than samples."""
    with pytest.raises(InvalidAudioError, match=r"got \(40, 2\)"):
        separator.separate(np.zeros((40, 2), np.float32), 44100)


def test_stream_blocks_in_the_wrong_layout_are_refused(separator):
    blocks = [np.zeros((1, 4410, 2), np.float32)] * 3
    with pytest.raises(InvalidAudioError, match=r"expected \[batch, channels, samples\]; got \(1, 4410, 2\)"):
        list(separator.stream(iter(blocks), 44100))
    with pytest.raises(InvalidAudioError, match=r"\[batch, channels, n\]"):
        list(separator.stream(iter([np.zeros((2, 4410), np.float32)]), 44100))


def test_wide_but_real_layouts_still_separate(separator):
    """Every channel count up to MAX_CHANNELS is audio (here 7.1.4 = 12 channels), and a mono [1, n] too."""
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, (12, 4410)).astype(np.float32)
    stems = separator.separate(audio, 44100)
    assert stems["vocals"].shape == (12, 4410)
    assert separator.separate(audio[:1], 44100)["vocals"].shape == (1, 4410)
    assert MAX_CHANNELS >= 24  # 22.2 surround


def test_the_refusal_allocates_nothing(tiny_model):
    """A million-sample [samples, channels] array at 44.1 kHz must fail in well under the memory it would take to
    separate it as a million channels (the process is capped at 3 GiB: the old code grew without bound)."""
    script = textwrap.dedent(f"""
        import resource, numpy as np
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from unet_sep import Separator
        from unet_sep.separate.stages import InvalidAudioError
        sep = Separator.from_pretrained({str(tiny_model)!r}, device="cpu")
        try:
            sep.separate(np.zeros((1_000_000, 2), np.float32), 44100)
        except InvalidAudioError as error:
            print("refused:", error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: expected [channels, samples]; got (1000000, 2)" in result.stdout


# ---- 2. integer input comes back in its own type ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_integer_input_comes_back_in_its_type(separator, dtype):
    audio = music_like(1.0, 44100, seed=2) * 0.5
    info = np.iinfo(dtype)
    if info.min < 0:
        ints = np.round(audio * (info.max + 1)).astype(dtype)
        centre = 0
    else:
        centre = (info.max + 1) // 2
        ints = np.round(audio * centre + centre).astype(dtype)
    stems = separator.separate(ints, 44100)
    assert all(s.dtype == dtype and s.shape == ints.shape for s in stems.values())
    # Each stem is rounded to the nearest step: the stems add up to the input within one step per stem (plus
    # float32's resolution, which only 32-bit integers notice: the signal path runs in float32).
    total = sum(s.astype(np.int64) - centre for s in stems.values()) + centre
    tolerance = len(stems) + (info.max + 1) * 2.0 ** -23
    assert np.abs(total - ints.astype(np.int64)).max() <= tolerance
    assert np.abs(stems["vocals"].astype(np.int64) - centre).max() > 10  # not silence


def test_float64_and_torch_integer_input_keep_their_types(separator):
    audio = music_like(0.5, 44100, seed=3)
    stems = separator.separate(audio.astype(np.float64), 44100)
    assert stems["vocals"].dtype == np.float64
    tensor = torch.from_numpy(np.round(audio * 20000).astype(np.int16))
    stems = separator.separate(tensor, 44100)
    assert stems["vocals"].dtype == torch.int16 and stems["vocals"].shape == tensor.shape
    total = stems["vocals"].long() + stems["accompaniment"].long()
    assert (total - tensor.long()).abs().max().item() <= 2


def test_clipped_integer_stems_are_counted_in_a_warning(separator, caplog):
    """Full-scale square waves: the stems' peaks exceed the int16 range, so they are clipped and counted."""
    t = np.arange(44100) / 44100
    square = np.where(np.sin(2 * np.pi * 50 * t) > 0, 32767, -32768).astype(np.int16)
    with caplog.at_level("WARNING", logger="unet_sep"):
        stems = separator.separate(np.stack([square, -square]), 44100)
    assert all(s.dtype == np.int16 for s in stems.values())
    clipped = [r.getMessage() for r in caplog.records if "clipped to the range of int16" in r.getMessage()]
    assert clipped, "clipping was not reported"
    assert int(clipped[0].split(": ")[1].split()[0]) > 0
    assert "pass float samples" in clipped[0]  # what to do about it (issue 25, item 5)


def test_complex_samples_are_refused(separator):
    with pytest.raises(InvalidAudioError, match="integers or floats"):
        separator.separate(np.zeros((2, 100), np.complex64), 44100)


# ---- 3. errors name the file; failed files carry no outputs ----------------------------------------------


def test_missing_file_error_names_the_path(separator, tmp_path):
    with pytest.raises(AudioDecodeError) as caught:
        separator.separate_file("nope.wav", tmp_path / "out")
    assert str(caught.value) == "nope.wav: no such file"
    assert caught.value.path == Path("nope.wav") and caught.value.reason == "no such file"


def test_bad_samples_error_names_the_file(separator, tmp_path):
    audio = music_like(1.0, 44100)
    audio[0, 1000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, audio.T, 44100, subtype="FLOAT")
    with pytest.raises(InvalidAudioError) as caught:
        separator.separate_file(path, tmp_path / "out")
    assert str(caught.value).startswith(f"{path}: audio contains NaN")


def test_failed_events_carry_no_outputs(separator, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, music_like(1.0, 44100).T, 44100)
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    events = separator.separate_files([good, tmp_path / "missing.wav", text], tmp_path / "out")
    kinds = {event.path.name: event for event in events}
    assert kinds["good.wav"].kind == "done" and all(p.is_file() for p in kinds["good.wav"].outputs.values())
    for name in ("missing.wav", "text.wav"):
        assert kinds[name].kind == "failed" and kinds[name].outputs == {}
        assert str(kinds[name].error).startswith(str(tmp_path / name) + ": ")
    assert not (tmp_path / "out" / "missing").exists() and not (tmp_path / "out" / "text").exists()


def test_a_file_with_more_channels_than_the_bound_fails_alone(separator, tmp_path):
    path = tmp_path / "wide.wav"
    sf.write(path, np.zeros((4410, MAX_CHANNELS + 16), np.float32), 44100, subtype="FLOAT")
    with pytest.raises(InvalidAudioError) as caught:
        separator.separate_file(path, tmp_path / "out")
    assert str(caught.value) == f"{path}: {MAX_CHANNELS + 16} channels: unet-sep separates 1 to {MAX_CHANNELS} channels"
    assert not (tmp_path / "out" / "wide").exists()


# ---- 6. the sample rate and the array are checked where they enter, for every entry -----------------------------

# 1 Hz (and True, which is 1) made the old code grow without bound: they are tried in a capped subprocess below.
BAD_RATES = [0, -44100, 7999, 192001, 44100.5, "44100", float("nan"), None]


@pytest.mark.parametrize("rate", BAD_RATES, ids=repr)
def test_a_rate_that_is_not_a_whole_number_of_hz_in_range_is_refused(separator, rate):
    audio = music_like(0.5, 16000)
    for call in (lambda: separator.separate(audio, rate), lambda: list(separator.stream([audio[None]], rate))):
        with pytest.raises(SettingError, match=r"^sample_rate: must be a whole number of Hz from 8000 to 192000, got "):
            call()


@pytest.mark.parametrize("rate", [True, np.bool_(True), 1, "16000", b"16000", 16000.000001, float("inf")], ids=repr)
def test_the_one_check_refuses_what_only_looks_like_a_rate(rate):
    with pytest.raises(SettingError, match="^sample_rate: must be a whole number of Hz"):
        check_sample_rate(rate)


def test_whole_rates_of_any_number_type_are_taken(separator):
    audio = music_like(0.5, 16000)
    reference = separator.separate(audio, 16000)["vocals"]
    for rate in (16000.0, np.int64(16000), np.float32(16000)):
        assert np.array_equal(separator.separate(audio, rate)["vocals"], reference)


def test_an_output_rate_of_a_file_is_checked_by_the_same_rule(separator, tmp_path):
    sf.write(tmp_path / "song.wav", music_like(0.5, 16000).T, 16000)
    with pytest.raises(SettingError, match=r"^sample_rate: .* got 44100.5$"):
        separator.separate_file(tmp_path / "song.wav", tmp_path / "out", sample_rate=44100.5)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("waveform", [[0.1, 0.2, 0.3], (0.1, 0.2), "song.wav", None], ids=repr)
def test_anything_but_an_array_or_a_tensor_is_named(separator, waveform):
    with pytest.raises(SettingError, match=r"^waveform: must be a numpy array or a torch tensor of samples, got "
                                           + type(waveform).__name__):
        separator.separate(waveform, 44100)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match=r"^blocks: must be a numpy array of samples"):
        list(separator.stream([waveform], 44100))  # type: ignore[list-item]


def _peak_growth_script(model: Path, rates: list, seconds: float) -> str:
    """A script that separates ``seconds`` of stereo at each of ``rates`` under a 4 GiB address-space cap and prints the
    growth of its peak resident memory (MB) over a warm-up, or the refusal."""
    return textwrap.dedent(f"""
        import resource, numpy as np, torch
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        torch.set_num_threads(1)
        from unet_sep import Separator
        from unet_sep.errors import SettingError
        sep = Separator.from_pretrained({str(model)!r}, device="cpu")
        audio = np.random.default_rng(0).uniform(-0.3, 0.3, (2, int(16000 * {seconds}))).astype(np.float32)
        sep.separate(audio[:, :16000], 16000)
        base = {PEAK_MB}
        for rate in {rates!r}:
            try:
                sep.separate(audio, rate)
            except SettingError as error:
                print("refused:", error)
        print("growth MB", {PEAK_MB} - base)
    """)


def test_a_rate_of_one_hz_is_refused_before_memory_grows(tiny_model):
    """``separate(x, 1)`` asked the 44.1 kHz model for 44100 times the samples: 21 GB before the kernel killed the
    process. Now it is refused at once (the process is capped at 4 GiB, so the old code fails here instead)."""
    result = subprocess.run([sys.executable, "-c", _peak_growth_script(tiny_model, [1, True], 10.0)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: sample_rate: must be a whole number of Hz from 8000 to 192000, got 1\n" in result.stdout
    assert "refused: sample_rate: must be a whole number of Hz from 8000 to 192000, got True\n" in result.stdout
    assert float(result.stdout.split("growth MB")[1]) < 50


def _peak_growth_mb(model: Path, rate: int, seconds: float) -> float:
    result = subprocess.run([sys.executable, "-c", _peak_growth_script(model, [rate], seconds * rate / 16000)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.split("growth MB")[1])


@pytest.mark.parametrize("rate, seconds", [(8000, 140.0), (192000, 20.0)])
def test_memory_stays_bounded_at_the_extreme_rates(tiny_model, rate, seconds):
    """At the ends of the range the 44.1 kHz model sees 5.5 times (8 kHz), or 0.23 times (192 kHz), the samples
    given. Four times the audio may grow the peak by the stems it returns (held twice while they are joined), not
    by more work space: measured on 2 Zen 4 cores, 8 kHz: 439 MB for 140 s, 582 MB for 560 s (stems: 72 MB)."""
    short, long = (_peak_growth_mb(tiny_model, rate, s) for s in (seconds, 4 * seconds))
    stems_mb = 2 * 2 * 2 * 4 * rate * 3 * seconds / 2**20  # two stems, two channels, float32, twice, 3x the seconds
    assert long - short < stems_mb + 150, (short, long, stems_mb)
