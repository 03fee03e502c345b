import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_model, music_like
from unet_sep import Separator
from unet_sep.dsp.measures import snr_db
from unet_sep.dsp.stft import istft, stft
from unet_sep.separate.stages import InvalidAudioError
from unet_sep.weights.checkpoint import load_model


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(tiny_model)


@pytest.fixture(scope="module")
def separator(loaded):
    config, net = loaded
    return Separator(net, config, device="cpu")


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000, 96000])
def test_stems_sum_to_mixture_at_any_rate(separator, rate):
    audio = music_like(6.3, rate)
    audio += 0.02 * np.random.default_rng(1).standard_normal(audio.shape).astype(np.float32)  # full-band content
    stems = separator.separate(audio, rate)
    assert list(stems) == ["vocals", "accompaniment"]
    for stem in stems.values():
        assert stem.shape == audio.shape and stem.dtype == np.float32
    assert snr_db(audio, sum(stems.values())) > 60
    # The stems really differ from each other and from a trivial split.
    assert snr_db(stems["vocals"], stems["accompaniment"]) < 20
    assert abs(snr_db(audio, 2 * stems["vocals"])) < 20


def test_full_band_by_default_and_spleeter_zero_extension_cuts_above_f(loaded):
    config, net = loaded
    rate = 44100
    audio = 0.1 * np.random.default_rng(2).standard_normal((2, rate * 4)).astype(np.float32)
    full = Separator(net, config, device="cpu").separate(audio, rate)
    cut = Separator(net, config, device="cpu", mask_extension="zeros").separate(audio, rate)

    def high_band_energy(x):
        spec = stft(torch.from_numpy(x))
        return float((spec[:, config.frequency_bins + 8 :].abs() ** 2).sum())

    total = high_band_energy(audio)
    assert high_band_energy(sum(full.values())) == pytest.approx(total, rel=1e-4)
    assert high_band_energy(sum(cut.values())) < 1e-4 * total  # Spleeter: nothing above 11 kHz (-40 dB)
    low = istft(_lowpass(stft(torch.from_numpy(audio)), config.frequency_bins), audio.shape[-1]).numpy()
    assert snr_db(low, sum(cut.values())) > 60  # and the stems then sum to the low-passed mixture


def _lowpass(spec, bins):
    spec = spec.clone()
    spec[:, bins:] = 0
    return spec


@pytest.mark.parametrize("shape", [(44100 * 3,), (1, 44100 * 3), (2, 44100 * 3), (6, 44100 * 3), (3, 2, 44100 * 3)])
def test_shapes_and_channel_policy(separator, shape):
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    stems = separator.separate(audio, 44100)
    for stem in stems.values():
        assert stem.shape == audio.shape
    assert snr_db(audio, sum(stems.values())) > 60


def test_channel_groups_are_independent(separator):
    rng = np.random.default_rng(4)
    surround = (0.1 * rng.standard_normal((6, 44100 * 2))).astype(np.float32)
    together = separator.separate(surround, 44100)["vocals"]
    front = separator.separate(surround[:2], 44100)["vocals"]
    back = separator.separate(surround[4:6], 44100)["vocals"]
    assert np.allclose(together[:2], front, atol=1e-6) and np.allclose(together[4:6], back, atol=1e-6)
    mono = surround[0]
    assert np.allclose(separator.separate(mono, 44100)["vocals"],
                       separator.separate(np.stack([mono, mono]), 44100)["vocals"].mean(0), atol=1e-6)


def test_batch_items_match_single_items(separator):
    audio = np.stack([music_like(4, 44100, seed=s) for s in range(3)])
    batched = separator.separate(audio, 44100)
    for i in range(3):
        single = separator.separate(audio[i], 44100)
        for stem in single:
            assert snr_db(single[stem], batched[stem][i]) > 90


def test_torch_in_torch_out_and_integer_input(separator):
    audio = torch.from_numpy(music_like(2, 16000))
    stems = separator.separate(audio, 16000)
    assert isinstance(stems["vocals"], torch.Tensor) and stems["vocals"].shape == audio.shape
    ints = (music_like(2, 16000) * 32767).astype(np.int16)
    as_int = separator.separate(ints, 16000)
    assert as_int["vocals"].dtype == np.int16  # the input's type (tests/test_api_edges.py has the details)
    assert snr_db(ints, sum(s.astype(np.int64) for s in as_int.values())) > 60


def test_streaming_in_any_block_size_equals_one_block(separator):
    audio = music_like(20, 44100)
    whole = separator.separate(audio, 44100)
    for size in (1000, 44100 * 7 + 13):
        blocks = [audio[None, :, i : i + size] for i in range(0, audio.shape[1], size)]
        # separate() plans the segments for the array's length; a stream told the length does the same
        out = np.concatenate(list(separator.stream(blocks, 44100, length=audio.shape[1])), axis=-1)
        assert out.shape == (2, 1, 2, audio.shape[1])
        assert np.array_equal(out[0, 0], whole["vocals"])


def test_chunked_agrees_with_whole_away_from_edges(loaded):
    config, net = loaded
    audio = music_like(40, 44100)
    whole_config = dataclasses.replace(config, segment_frames=2048)  # one segment covers all 1727 frames
    whole = Separator(net, whole_config, device="cpu", segmentation="spleeter").separate(audio, 44100)
    overlapped = Separator(net, config, device="cpu", overlap=0.25).separate(audio, 44100)
    hard_cuts = Separator(net, config, device="cpu", segmentation="spleeter").separate(audio, 44100)
    inner = slice(44100 * 3, audio.shape[1] - 44100 * 3)
    for stem in whole:
        agree = snr_db(whole[stem][:, inner], overlapped[stem][:, inner])
        seams = snr_db(whole[stem][:, inner], hard_cuts[stem][:, inner])
        assert agree > 50, (stem, agree)
        assert agree > seams + 20, (stem, agree, seams)


def test_silence_gives_silent_stems(separator):
    stems = separator.separate(np.zeros((2, 44100 * 2), np.float32), 44100)
    assert all(np.abs(s).max() == 0 for s in stems.values())


def test_invalid_audio_is_rejected(separator):
    audio = music_like(2, 44100)
    audio[1, 5000] = np.nan
    with pytest.raises(InvalidAudioError, match="NaN"):
        separator.separate(audio, 44100)
    with pytest.raises(InvalidAudioError, match="shape"):
        separator.separate(np.zeros((1, 1, 1, 10), np.float32), 44100)
    assert separator.separate(np.zeros((2, 0), np.float32), 44100)["vocals"].shape == (2, 0)


def test_from_pretrained_loads_the_saved_model(tiny_model, loaded):
    config, net = loaded
    separator = Separator.from_pretrained(str(tiny_model), device="cpu")
    assert separator.stems == ["vocals", "accompaniment"] and separator.sample_rate == 44100
    for name, tensor in separator.runner.net.state_dict().items():
        assert torch.equal(tensor, net.state_dict()[name])
    assert separator.runner.net.unets[0].encoder[0].bn.running_var.min() >= 0.5  # BN statistics survived the round trip


def test_checkpoint_errors(tmp_path, tiny_model):
    from unet_sep.weights.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path)
    broken = make_model(tmp_path / "m", unet=__import__("unet_sep").UNetConfig(filters=[4, 8, 16, 32, 64, 128]))
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(broken)
    other = make_model(tmp_path / "o")
    config = __import__("json").loads((other / "config.json").read_text())
    config["unet"]["filters"] = [8, 8, 16, 32, 64, 128]
    (other / "config.json").write_text(__import__("json").dumps(config))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(other)
