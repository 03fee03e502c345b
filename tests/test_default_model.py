"""The bundled default model: separates a real song with no --model, full band, at the song's own rate and
length, and separates real singing from accompaniment on held-out MIR-1K singers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED
from unet_sep import Separator
from unet_sep.audio import read_audio
from unet_sep.dsp.measures import snr_db
from unet_sep.weights.entries import PACKAGE_DIR
from unet_sep.weights.registry import default_model_name, resolve_model

MIR1K = SHARED / "data" / "mir1k"


def test_bundled_model_is_registered_small_and_loads():
    name = default_model_name()
    assert name == "mir1k-vocals-accompaniment"
    folder = resolve_model(name)
    assert folder.parent == PACKAGE_DIR / "pretrained"
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    assert (folder / "MODEL_CARD.md").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["stems"] == ["vocals", "accompaniment"] and config["sample_rate"] == 16000
    assert Separator.from_pretrained(name, device="cpu").stems == ["vocals", "accompaniment"]


def test_separate_a_real_song_without_model_option(tmp_path, example_mp3):
    proc = subprocess.run([sys.executable, "-m", "unet_sep", "separate", str(example_mp3), "--out", str(tmp_path),
                           "--bit-depth", "float", "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    mixture, rate = sf.read(example_mp3, dtype="float32")
    vocals, vrate = sf.read(tmp_path / "audio_example" / "vocals.wav", dtype="float32")
    accompaniment, _ = sf.read(tmp_path / "audio_example" / "accompaniment.wav", dtype="float32")
    assert vrate == rate == 44100 and vocals.shape == accompaniment.shape == mixture.shape
    assert snr_db(mixture, vocals + accompaniment) > 60  # full band: nothing lost above the model's 8 kHz
    # A real split, not a copy: the accompaniment keeps most of the energy of this instrumental-heavy song.
    assert np.sum(accompaniment**2) > 2 * np.sum(vocals**2) > 0


HELD_OUT_CLIPS = ["heycat_4_05", "khair_2_04", "stool_5_04", "jmzen_3_02", "heycat_1_01", "khair_5_03"]


def test_separates_held_out_singers():
    """On clips of the test singers, mixed as recorded: every clip gains over the mixture, and the mean gain is
    what a trained separator gives (the mixture itself scores 0 dB; the bundled model about 9.6 dB)."""
    if not (MIR1K / "splits.json").is_file():
        pytest.skip(f"MIR-1K not found under {MIR1K} (../shared is absent)")
    test_singers = json.loads((MIR1K / "splits.json").read_text())["singer_lists"]["test"]
    separator = Separator.from_pretrained("mir1k-vocals-accompaniment", device="cpu")
    gains = []
    for clip in HELD_OUT_CLIPS:
        assert clip.split("_")[0] in test_singers
        vocals, rate = read_audio(MIR1K / clip / "vocals.ogg")
        accompaniment, _ = read_audio(MIR1K / clip / "accompaniment.ogg")
        mixture = vocals + accompaniment
        stems = separator.separate(mixture, rate)
        gains.append((snr_db(vocals, stems["vocals"]) - snr_db(vocals, mixture),
                      snr_db(accompaniment, stems["accompaniment"]) - snr_db(accompaniment, mixture)))
    gains = np.array(gains)
    assert gains.min() > 3.0, dict(zip(HELD_OUT_CLIPS, gains.tolist(), strict=True))
    assert gains.mean(axis=0).min() > 7.0, gains.mean(axis=0)
