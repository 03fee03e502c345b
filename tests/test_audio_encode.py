"""The stem writer stages each file under the one temporary-name scheme of ``unet_sep.atomic``: a finished stem
is renamed into place, an aborted one leaves nothing, and the leftover of a killed writer is one that
``remove_stale_temporaries`` finds and removes. What each format holds (checked against libsndfile itself), the
words of every write failure (never a temporary file's name), samples beyond full scale, and the float spool of
``--clip-mode rescale``."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unet_sep.atomic import is_stale_temporary, remove_stale_temporaries, temporary_path
from unet_sep.audio import encode
from unet_sep.audio.encode import (
    FULL_SCALE,
    AtomicAudioWriter,
    AudioEncodeError,
    EncoderLimitError,
    OutputFolderError,
    check_output,
    rescale_gain,
    write_failure,
)
from unet_sep.audio.spool import StemSpool


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


# ---- issue 25 item 4: what each format holds, found by trying libsndfile ------------------------------------

LIBSNDFILE = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
              "mp3": ("MP3", "MPEG_LAYER_III")}


def _libsndfile_takes(tmp_path, fmt: str, rate: int, channels: int) -> bool:
    """Whether libsndfile itself writes ``fmt`` at ``rate`` and ``channels`` (in a subprocess: libvorbis crashes
    the process on some values it does not take)."""
    container, subtype = LIBSNDFILE[fmt]
    code = ("import sys, numpy as np, soundfile as sf\n"
            f"with sf.SoundFile(sys.argv[1], 'w', {rate}, {channels}, {subtype!r}, format={container!r}) as f:\n"
            f"    f.write(np.zeros((256, {channels}), np.float32))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"probe.{fmt}")], capture_output=True,
                            text=True, timeout=60)
    return result.returncode == 0


@pytest.mark.parametrize("fmt, rate, channels", [
    ("mp3", 8000, 2), ("mp3", 48000, 2), ("mp3", 88200, 2), ("mp3", 96000, 2), ("mp3", 192000, 1),
    ("mp3", 44100, 3), ("mp3", 44100, 6), ("flac", 192000, 8), ("flac", 44100, 9), ("ogg", 8000, 64),
    ("ogg", 192000, 2), ("wav", 192000, 64), ("wav", 8000, 1024), ("wav", 44100, 1025),
])
def test_the_format_limits_table_agrees_with_libsndfile(tmp_path, fmt, rate, channels):
    try:
        check_output(fmt, rate, channels)
        ours = True
    except EncoderLimitError:
        ours = False
    assert ours == _libsndfile_takes(tmp_path, fmt, rate, channels), (fmt, rate, channels)


@pytest.mark.parametrize("args, problem, python, cli", [
    (("mp3", 96000, 2), "mp3 cannot be written at 96000 Hz", "sample_rate=48000 or fmt='flac'",
     "--sample-rate 48000 or --format flac"),
    (("mp3", 88200, 2), "mp3 cannot be written at 88200 Hz", "sample_rate=44100 or fmt='flac'",
     "--sample-rate 44100 or --format flac"),
    (("mp3", 44100, 6), "mp3 holds at most 2 channels; these stems have 6", "fmt='flac'", "--format flac"),
    (("flac", 44100, 10), "flac holds at most 8 channels; these stems have 10", "fmt='wav'", "--format wav"),
    (("mp3", 11025, 2, 320), "mp3 at 11025 Hz offers 8, 16, 24, 32, 40, 48, 56, 64 kbit/s, not 320",
     "bitrate=64 or sample_rate=44100", "--bitrate 64 or --sample-rate 44100"),
    (("mp3", 44100, 2, 8), "mp3 at 44100 Hz offers 32,", "bitrate=32 or sample_rate=22050",
     "--bitrate 32 or --sample-rate 22050"),
    (("wav", 44100, 2, None, 2**31, "FLOAT"), "wav holds at most 4.0 GiB of samples per file, 12171 s",
     "fmt='flac' or duration=12170", "--format flac or --duration 12170"),
])
def test_a_limit_says_what_to_use_instead_in_the_callers_words(args, problem, python, cli):
    with pytest.raises(EncoderLimitError) as caught:
        check_output(*args)
    assert caught.value.reason.startswith(problem) and caught.value.reason.endswith(f"; use {python}")
    options = {"sample_rate": "--sample-rate", "fmt": "--format", "bitrate": "--bitrate", "duration": "--duration"}
    assert caught.value.spelled(lambda setting, value: f"{options[setting]} {value}").endswith(f"; use {cli}")
    assert pickle.loads(pickle.dumps(caught.value)).reason == caught.value.reason  # crosses torchrun's ranks


def test_a_wav_stops_before_it_outgrows_what_its_header_can_say(tmp_path, monkeypatch):
    """libsndfile writes a WAV past 4 GiB without a word, and its header then reads back short (measured: 4.36 GB
    of float samples read back as 4.29 GB); the writer refuses the block that would go past, naming what to use."""
    monkeypatch.setitem(encode.FORMAT_LIMITS, "wav", encode.FormatLimits(None, 1024, data_bytes=64_000))
    target = tmp_path / "vocals.wav"
    with pytest.raises(EncoderLimitError, match=r"^wav holds at most 0.0 GiB of samples per file, 1 s of these "
                                                r"stems; use fmt='flac' or duration=1$"):
        with AtomicAudioWriter(target, 8000, 2, "wav", "float") as writer:
            for _ in range(3):
                writer.write(np.zeros((2, 3000), np.float32))  # 48 kB per block
    assert list(tmp_path.iterdir()) == []


# ---- issue 25 items 4 and 7: write failures in words, never naming a temporary file --------------------------


def _no_temporary_name(text: str, writer_tmp: Path | None = None) -> None:
    assert ".partial" not in text and "@" not in text, text
    if writer_tmp is not None:
        assert writer_tmp.name not in text, text


@pytest.mark.parametrize("code, words, stops", [
    (errno.ENOSPC, "no space left on device in {folder}", True),
    (errno.EDQUOT, "disk quota exceeded in {folder}", True),
    (errno.EROFS, "{folder} is on a read-only file system", True),
    (errno.EIO, "input/output error writing {path} (the disk or network share failed)", False),
    (errno.EFBIG, "{path} grew past the largest file allowed here (the file size limit, ulimit -f", False),
    (errno.ENOENT, "the output folder {folder} was removed while vocals.flac was written", False),
])
def test_each_refusal_of_the_operating_system_has_its_own_words(tmp_path, code, words, stops):
    target = tmp_path / "song" / "vocals.flac"
    temporary = temporary_path(target)
    error = write_failure(target, OSError(code, os.strerror(code), str(temporary)), temporary)
    assert str(error).startswith(words.format(folder=target.parent, path=target)), str(error)
    assert isinstance(error, OutputFolderError) == stops
    _no_temporary_name(str(error), temporary)


def test_enospc_where_the_writer_writes_is_no_space_left_not_a_system_error(tmp_path, monkeypatch):
    """libsndfile reports every refused write as "System error."; the errno of its call says which."""
    target = tmp_path / "vocals.wav"
    writer = AtomicAudioWriter(target, 44100, 2)

    def full(self, data):  # libsndfile's own failure, as a full disk gives it: code 2, errno ENOSPC
        sf._ffi.errno = errno.ENOSPC
        raise sf.LibsndfileError(2)

    monkeypatch.setattr(sf.SoundFile, "write", full)
    with pytest.raises(OutputFolderError) as caught:
        writer.write(np.zeros((2, 100), np.float32))
    assert str(caught.value) == f"no space left on device in {tmp_path}"
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_real_libsndfile_and_os_failures_never_name_the_temporary_file(tmp_path):
    target = tmp_path / "song" / "vocals.flac"
    target.parent.mkdir()
    temporary = temporary_path(target)
    with pytest.raises(sf.LibsndfileError) as refused:  # libsndfile's own text quotes the file it opened
        sf.SoundFile(str(temporary), "w", 44100, 9, format="FLAC")
    assert temporary.name in str(refused.value)
    error = write_failure(target, refused.value, temporary)
    assert str(error) == f"cannot write {target}: Format not recognised."

    writer = AtomicAudioWriter(target, 44100, 2, "flac", "16")  # the folder goes away before the rename
    writer.write(np.zeros((2, 100), np.float32))
    writer.finish()
    shutil.rmtree(target.parent)
    with pytest.raises(AudioEncodeError) as gone:
        writer.publish()
    assert str(gone.value) == f"the output folder {target.parent} was removed while vocals.flac was written"
    _no_temporary_name(str(gone.value), writer.tmp_path)

    target.mkdir(parents=True)  # the final name is a folder
    writer = AtomicAudioWriter(target, 44100, 2)
    writer.write(np.zeros((2, 100), np.float32))
    with pytest.raises(AudioEncodeError) as folder:
        writer.commit()
    assert str(folder.value) == f"{target} is a folder"
    writer.abort()


# ---- issue 25 item 5: what lossy encoders do with samples beyond full scale; the spool of rescale -------------


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_lossy_formats_keep_samples_beyond_full_scale(tmp_path, fmt):
    """mp3 and ogg encode floats, and read back as floats they keep a peak of 1.5: no clip mode is needed for
    them by default (an integer decoder clips, as it would the input's own overshoots)."""
    t = np.arange(2 * 44100) / 44100
    block = (1.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None].repeat(2, 0)
    with AtomicAudioWriter(tmp_path / f"tone.{fmt}", 44100, 2, fmt) as writer:
        writer.write(block)
        writer.commit()
    data, _ = sf.read(tmp_path / f"tone.{fmt}", dtype="float32")
    assert 1.45 < np.abs(data).max() < 1.6 and writer.clipped == 0


def test_integer_pcm_clamps_and_counts(tmp_path):
    block = np.array([[0.5, 1.25, -1.5, 1.0]], np.float32)
    with AtomicAudioWriter(tmp_path / "x.flac", 8000, 1, "flac", "16") as writer:
        writer.write(block)
        writer.commit()
    assert writer.clipped == 2
    assert sf.read(tmp_path / "x.flac", dtype="int16")[0].tolist() == [16384, 32767, -32768, 32767]


@pytest.mark.parametrize("fmt, depth", [("wav", "16"), ("wav", "24"), ("flac", "16"), ("flac", "24")])
def test_integer_pcm_is_rounded_to_the_nearest_step(tmp_path, fmt, depth):
    """libsndfile's WAV writer truncates floats to integers (0.1 -> 3276 of 32768, a DC offset of half a step and
    6 dB more noise than its FLAC writer, which rounds): the writer rounds them first, in every format alike."""
    noise = (0.2 * np.random.default_rng(0).standard_normal((1, 44100))).astype(np.float32)
    block = np.concatenate([np.array([[0.1, -0.1, 0.25]], np.float32), noise], axis=1)
    with AtomicAudioWriter(tmp_path / f"x.{fmt}", 44100, 1, fmt, depth) as writer:
        writer.write(block)
        writer.commit()
    steps = 2 ** (int(depth) - 1)
    stored = sf.read(tmp_path / f"x.{fmt}", dtype="int32")[0] >> (32 - int(depth))
    assert stored.tolist() == np.round(block[0].astype(np.float64) * steps).astype(int).tolist()
    error = stored[3:] / steps - noise[0]
    assert abs(error.mean()) < 0.01 / steps  # no offset
    assert 10 * np.log10(np.sum(noise.astype(np.float64) ** 2) / np.sum(error ** 2)) > 6.02 * int(depth) - 12


def test_the_spool_gives_back_what_it_took_and_its_peak(tmp_path):
    target = tmp_path / "vocals.flac"
    spool = StemSpool(target, 4)
    assert spool.path.parent == tmp_path and spool.path.name.startswith(".vocals.flac.spool.")
    assert not is_stale_temporary(spool.path.name)  # its writer runs; a killed one's is a leftover the next run removes
    assert is_stale_temporary(spool.path.name.replace(f".{os.getpid()}@", ".999999999@"))
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((4, n)).astype(np.float32) for n in (1000, 0, 2500, 17)]
    for block in blocks:
        spool.write(block)
    whole = np.concatenate(blocks, axis=1)
    assert spool.peak == float(np.abs(whole).max()) and spool.frames == whole.shape[1]
    back = list(spool.blocks(1024))
    assert [b.shape for b in back] == [(4, 1024), (4, 1024), (4, 1024), (4, 445)]
    assert np.array_equal(np.concatenate(back, axis=1), whole)
    spool.remove()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("peak, gain", [(0.5, 1.0), (FULL_SCALE, 1.0), (1.25, FULL_SCALE / 1.25)])
def test_the_rescale_gain_brings_the_peak_to_full_scale(peak, gain):
    assert rescale_gain(peak) == gain
