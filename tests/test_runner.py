"""The network runner: engines run exactly the planned segments in batches of the chosen size, full batches only
until the input ends, and reduced precision stays close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import count_batches, music_like, record_starts
from unet_sep import Separator
from unet_sep.dsp.measures import snr_db
from unet_sep.weights.checkpoint import load_model


def test_engine_runs_the_planned_segments(tiny_model):
    """The streaming engine runs exactly the planned starts, whatever the block sizes."""
    runner = Separator.from_pretrained(tiny_model, device="cpu", batch_size=3).runner
    audio = music_like(20.0, 44100, 2, seed=4)
    engine = runner.engine(1)
    starts_seen = record_starts(engine)
    for lo in range(0, audio.shape[1], 70001):
        engine.feed(audio[None, :, lo : lo + 70001])
        while engine.ready() >= 3:
            runner.run_batch([engine], 3)
        engine.drain()
    engine.close()
    while engine.ready():
        runner.run_batch([engine], 3)
    engine.drain()
    assert engine.done
    assert starts_seen == runner.settings.plan.starts(engine.total_frames)


def test_run_ready_runs_full_batches_until_the_end(tiny_model):
    """Across two engines: only full batches while input may still come, the rest once it has ended; the engines
    are asked for again before every batch."""
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=4)
    runner = separator.runner
    sizes = count_batches(separator)
    engines = [runner.engine(1), runner.engine(1)]
    for seed, engine in enumerate(engines):
        engine.feed(music_like(40.0, 44100, 2, seed=seed)[None])  # about 4 segments each
    asked = []

    def current():
        asked.append(len(engines))
        return engines

    ran = list(runner.run_ready(current))
    assert ran and all(n == 4 for n in ran) and sizes == ran
    assert sum(engine.ready() for engine in engines) < 4
    assert len(asked) == len(ran) + 1
    for engine in engines:
        engine.close()
    total = sum(engine.ready() for engine in engines)
    final = list(runner.run_ready(lambda: engines, final=True))
    assert sum(final) == total and all(n <= 4 for n in final)
    assert all(engine.ready() == 0 for engine in engines)


def test_reduced_precision_stays_close_to_fp32(tiny_model):
    audio = music_like(6.0, 44100, 2, seed=11)
    reference = Separator.from_pretrained(tiny_model, device="cpu").separate(audio, 44100)
    reduced = Separator.from_pretrained(tiny_model, device="cpu", precision="bf16").separate(audio, 44100)
    for stem, expected in reference.items():
        assert reduced[stem].dtype == np.float32 and reduced[stem].shape == expected.shape
        assert 25.0 < snr_db(expected, reduced[stem]) < 90.0  # close, and really computed in bf16
    with pytest.raises(ValueError, match="precision"):
        Separator.from_pretrained(tiny_model, device="cpu", precision="fp8")


def test_tf32_convolutions_in_the_default_mode_only(tiny_model):
    """cuDNN runs float32 convolutions in TF32 unless told otherwise: about 70 dB from float32 (benchmarks/tf32.py),
    where Spleeter-exact mode promises Spleeter's numbers at about 100 dB. The runner asks for full float32 around
    the U-Nets in exact mode and for TF32 in the default mode, and leaves the process's setting as it found it, so
    separators of both modes share a process. Read inside the U-Nets' first convolution (the setting is a flag on
    the CPU too)."""
    conv = torch.backends.cudnn.conv
    config, net = load_model(tiny_model)
    seen: list[str] = []
    net.unets[0].encoder[0].register_forward_pre_hook(lambda *_: seen.append(conv.fp32_precision))
    exact = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros")
    default = Separator(net, config, device="cpu")
    audio = music_like(3.0, 44100, 2, seed=12)
    original = conv.fp32_precision
    try:
        for before in ("ieee", "tf32"):
            conv.fp32_precision = before
            for separator, expected in ((exact, "ieee"), (default, "tf32"), (exact, "ieee")):
                seen.clear()
                separator.separate(audio, 44100)
                assert seen and set(seen) == {expected}, (separator.runner.settings.plan, seen)
                assert conv.fp32_precision == before
    finally:
        conv.fp32_precision = original


def test_the_torchscript_form_gives_the_eager_numbers(tiny_model):
    """``optimize=True`` traces and freezes the U-Nets in their inference form (sub-pixel decoders made for the
    segments' size): the same stems as eager mode, to float rounding."""
    audio = music_like(4.0, 44100, 2, seed=13)
    eager = Separator.from_pretrained(tiny_model, device="cpu").separate(audio, 44100)
    frozen = Separator.from_pretrained(tiny_model, device="cpu", optimize=True)
    assert isinstance(frozen.runner.network(), torch.jit.ScriptModule)  # traced, not the eager fallback
    stems = frozen.separate(audio, 44100)
    for stem, expected in eager.items():
        assert snr_db(expected, stems[stem]) > 100.0
