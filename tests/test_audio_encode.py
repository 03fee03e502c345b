"""The stem writer stages each file under the one temporary-name scheme of ``unet_sep.atomic``: a finished stem
is renamed into place, an aborted one leaves nothing, and the leftover of a killed writer is one that
``remove_stale_temporaries`` finds and removes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf

from unet_sep.atomic import is_stale_temporary, remove_stale_temporaries
from unet_sep.audio.encode import AtomicAudioWriter


def test_a_committed_stem_is_renamed_from_a_temporary_of_the_shared_scheme(tmp_path):
    target = tmp_path / "vocals.flac"
    block = (0.1 * np.random.default_rng(0).standard_normal((2, 1000))).astype(np.float32)
    with AtomicAudioWriter(target, 44100, 2, "flac", "16") as writer:
        assert writer.tmp_path.parent == tmp_path and writer.tmp_path.name.startswith(".vocals.flac.")
        assert writer.tmp_path.exists() and not target.exists()
        assert not is_stale_temporary(writer.tmp_path.name)  # its writer, this process, is running
        assert remove_stale_temporaries(tmp_path) == []
        writer.write(block)
        assert writer.commit() == target
    assert [p.name for p in tmp_path.iterdir()] == ["vocals.flac"]
    info = sf.info(target)
    assert (info.format, info.subtype, info.frames, info.channels) == ("FLAC", "PCM_16", 1000, 2)


def test_an_aborted_stem_leaves_nothing(tmp_path):
    target = tmp_path / "vocals.wav"
    try:
        with AtomicAudioWriter(target, 16000, 1) as writer:
            writer.write(np.zeros((1, 100), np.float32))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporary_is_found_and_removed(tmp_path):
    code = ("import os, sys, numpy as np\n"
            "from unet_sep.audio.encode import AtomicAudioWriter\n"
            "writer = AtomicAudioWriter(sys.argv[1], 16000, 1)\n"
            "writer.write(np.zeros((1, 100), np.float32))\n"
            "os._exit(0)  # killed before the commit\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "vocals.wav")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".vocals.wav."), leftovers
    assert is_stale_temporary(leftovers[0].name)
    assert remove_stale_temporaries(tmp_path) == leftovers
    assert list(tmp_path.iterdir()) == []
