import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import music_like
from unet_sep.cli import app
from unet_sep.dsp.measures import snr_db


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_separate_real_mp3_end_to_end(tmp_path, tiny_model, example_mp3):
    before = example_mp3.read_bytes()
    out = tmp_path / "stems"
    proc = subprocess.run(
        [sys.executable, "-m", "unet_sep", "separate", str(example_mp3), "--out", str(out), "--model", str(tiny_model),
         "--bit-depth", "float"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "separated 1 file(s)" in proc.stderr
    mixture, rate = sf.read(example_mp3, dtype="float32")
    stems = {}
    for stem in ("vocals", "accompaniment"):
        path = out / "audio_example" / f"{stem}.wav"
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, 479832, "FLOAT")
        stems[stem], _ = sf.read(path, dtype="float32")
    assert snr_db(mixture, stems["vocals"] + stems["accompaniment"]) > 60
    assert snr_db(stems["vocals"], stems["accompaniment"]) < 20
    assert example_mp3.read_bytes() == before
    assert not list(out.rglob(".*"))  # no temporary files left


def test_folder_glob_formats_and_subset(tmp_path, tiny_model):
    songs = tmp_path / "songs"
    (songs / "sub").mkdir(parents=True)
    sf.write(songs / "a.wav", music_like(3, 48000).T, 48000, subtype="PCM_24")
    sf.write(songs / "sub" / "b.flac", music_like(2, 22050, channels=1).T, 22050)
    sf.write(songs / "c.ogg", music_like(2, 32000).T, 32000)
    (songs / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    code, output = run("separate", songs, "--out", out, "--model", tiny_model, "--format", "flac", "--bit-depth", "24",
                       "--stems", "vocals", "--template", "{stem}/{track}.{ext}", "--quiet")
    assert code == 0, output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["vocals/a.flac", "vocals/b.flac", "vocals/c.flac"]
    for name, rate, channels, frames in [("a", 48000, 2, 144000), ("b", 22050, 1, 44100), ("c", 32000, 2, 64000)]:
        info = sf.info(out / "vocals" / f"{name}.flac")
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (rate, channels, frames, "PCM_24")

    code, output = run("separate", str(songs / "*.wav"), "--out", tmp_path / "mp3", "--model", tiny_model,
                       "--format", "mp3", "--quiet")
    assert code == 0, output
    info = sf.info(tmp_path / "mp3" / "a" / "vocals.mp3")
    assert info.samplerate == 48000 and info.channels == 2 and abs(info.frames - 144000) < 3000


def test_other_containers_through_pyav(tmp_path, tiny_model):
    path = tmp_path / "clip.m4a"
    audio = music_like(2, 48000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="stereo")
        for i in range(0, audio.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, i : i + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    from unet_sep.audio import read_audio

    decoded, rate = read_audio(path)
    code, output = run("separate", path, "--out", tmp_path / "out", "--model", tiny_model, "--bit-depth", "float",
                       "--quiet")
    assert code == 0, output
    vocals, vrate = sf.read(tmp_path / "out" / "clip" / "vocals.wav", dtype="float32")
    accompaniment, _ = sf.read(tmp_path / "out" / "clip" / "accompaniment.wav", dtype="float32")
    assert vrate == rate == 48000 and vocals.shape == decoded.T.shape
    assert snr_db(decoded.T, vocals + accompaniment) > 60


@pytest.mark.parametrize("rate,channels", [(8000, 1), (192000, 2), (44100, 4)])
def test_extreme_rates_and_channel_counts(tmp_path, tiny_model, rate, channels):
    audio = music_like(1.5, rate, channels=channels)
    sf.write(tmp_path / "x.wav", audio.T, rate, subtype="PCM_16")
    code, output = run("separate", tmp_path / "x.wav", "--out", tmp_path / "out", "--model", tiny_model,
                       "--bit-depth", "float", "--quiet")
    assert code == 0, output
    stems = [sf.read(tmp_path / "out" / "x" / f"{s}.wav", dtype="float32") for s in ("vocals", "accompaniment")]
    mixture, _ = sf.read(tmp_path / "x.wav", dtype="float32", always_2d=True)
    assert stems[0][1] == rate and stems[0][0].reshape(mixture.shape).shape == mixture.shape
    assert snr_db(mixture, (stems[0][0] + stems[1][0]).reshape(mixture.shape)) > 60


def test_offset_duration_skip_and_overwrite(tmp_path, tiny_model):
    sf.write(tmp_path / "x.wav", music_like(5, 16000).T, 16000)
    args = ["separate", tmp_path / "x.wav", "--out", tmp_path / "out", "--model", tiny_model, "--quiet"]
    code, output = run(*args, "--offset", "1.5", "--duration", "2")
    assert code == 0, output
    target = tmp_path / "out" / "x" / "vocals.wav"
    assert sf.info(target).frames == 32000
    stamp = target.stat().st_mtime_ns
    code, output = run(*args)
    assert code == 0 and "skipped" in output and target.stat().st_mtime_ns == stamp
    code, output = run(*args, "--overwrite", "--duration", "100")  # past the end: to the end, not an error
    assert code == 0, output
    assert sf.info(target).frames == 80000
    code, output = run(*args, "--overwrite", "--sample-rate", "8000")
    assert code == 0 and sf.info(target).samplerate == 8000 and abs(sf.info(target).frames - 40000) <= 2


def test_option_errors_exit_2(tmp_path, tiny_model):
    sf.write(tmp_path / "x.wav", music_like(1, 16000).T, 16000)
    base = ["separate", tmp_path / "x.wav", "--out", tmp_path / "out"]
    for extra, message in [
        (["--model", tmp_path / "nope"], "no such model"),
        (["--model", tiny_model, "--stems", "drums"], "unknown stem"),
        (["--model", tiny_model, "--format", "aiff"], "unknown output format"),
        (["--model", tiny_model, "--format", "flac", "--bit-depth", "float"], "bit depth"),
        (["--model", tiny_model, "--template", "{track}.{ext}"], "same file name"),
        (["--model", tiny_model, "--segmentation", "wild"], "segmentation"),
    ]:
        code, output = run(*base, *extra)
        assert code == 2 and message in output, (extra, output)
        assert "Traceback" not in output
    assert not (tmp_path / "out").exists()


def test_help_models_and_version():
    code, output = run("--help")
    assert code == 0 and "separate" in output and "models" in output
    code, output = run("separate", "--help")
    assert code == 0 and "--overlap" in output and "--segmentation" in output
    code, output = run("models")
    assert code == 0
    code, output = run("--version")
    assert code == 0 and output.startswith("unet-sep ")


def test_each_input_is_opened_once(tmp_path, tiny_model, monkeypatch):
    """The command reads each input's length from the pipeline, which opens the file once to separate it."""
    import unet_sep.audio.decode as decode
    from unet_sep.separate import reader

    opened = []
    real_open = decode.open_audio

    def counting_open(path):
        opened.append(str(path))
        return real_open(path)

    monkeypatch.setattr(decode, "open_audio", counting_open)
    monkeypatch.setattr(reader, "open_audio", counting_open)
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", music_like(1.5, 16000).T, 16000)
    code, output = run("separate", tmp_path / "a.wav", tmp_path / "b.wav", "--out", tmp_path / "out",
                       "--model", tiny_model)
    assert code == 0, output
    assert sorted(opened) == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]


def test_progress_bars_follow_the_events(tmp_path):
    """The overall bar's total and count come from the run's events (tests/test_progress.py has the arithmetic)."""
    from unet_sep.cli.progress import ProgressBars
    from unet_sep.separate.files import FileEvent

    paths = {}
    for index, size in {0: 1000, 1: 3000}.items():
        paths[index] = tmp_path / f"{index}.wav"
        paths[index].write_bytes(b"\0" * size)
    progress = ProgressBars(2, paths, enabled=True)  # the bars go to the captured stderr
    assert progress.overall.total == 0
    progress.add(FileEvent("started", 0, paths[0], total=20 * 8000, sample_rate=8000))
    assert progress.overall.total == pytest.approx(80)  # 20 s in 1000 bytes: the other file is estimated at 60 s
    progress.add(FileEvent("progress", 0, paths[0], done=5 * 8000, total=20 * 8000, sample_rate=8000))
    assert progress.overall.n == pytest.approx(5) and progress.bars[0].n == pytest.approx(5)
    progress.add(FileEvent("done", 0, paths[0], done=20 * 8000, total=20 * 8000, sample_rate=8000))
    assert progress.overall.n == pytest.approx(20) and 0 not in progress.bars
    progress.add(FileEvent("skipped", 1, paths[1]))
    assert progress.overall.total == pytest.approx(20)
    progress.close()
