"""``unet-sep evaluate``: museval BSSEval v4 scores, SiSEC18 medians, baselines, MIR-1K's GNSDR, resuming, reports.

The data are tiny synthetic songs (3-5 s at 16 kHz) so museval, which is slow, stays within a few seconds per
track; the model is random, so only the baselines and the consistency with museval are asserted on.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import make_model
from musdb_tree import SOURCES, make_musdb_tree, synthetic_sources
from unet_sep import STFTConfig, UNetConfig
from unet_sep.cli import app
from unet_sep.data.musdb_support import import_museval
from unet_sep.evaluate import score as score_module
from unet_sep.evaluate.plan import plan_evaluation
from unet_sep.evaluate.score import load_track_json, mix_at_0db, sisec_medians
from unet_sep.separate.settings import SeparationSettings

museval = import_museval()  # importable without ffmpeg/ffprobe (a stand-in for stempeg then)
RATE = 16000
STEMS = ["vocals", "accompaniment"]


def run(*args):
    result = CliRunner().invoke(app, ["evaluate", *(str(a) for a in args)])
    return result.exit_code, result.output


def small_model(folder: Path, seed: int = 0) -> Path:
    return make_model(folder, seed=seed, sample_rate=RATE, stft=STFTConfig(n_fft=1024, hop_length=256),
                      frequency_bins=256, segment_frames=64, unet=UNetConfig(filters=[4, 8, 16, 32]))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def summary(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    return {(r["method"], r["stem"]): {k: float(v) if v else math.nan for k, v in r.items()
                                       if k not in ("method", "stem")}
            for r in read_csv(path / "summary.csv")}


def framewise(references: list[np.ndarray], estimates: list[np.ndarray], win: int) -> tuple[np.ndarray, ...]:
    """museval.evaluate on [channels, samples] arrays: (SDR, ISR, SIR, SAR), each [sources, windows]."""
    return museval.evaluate([r.T for r in references], [e.T for e in estimates], win=win, hop=win)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return small_model(tmp_path_factory.mktemp("models") / "unet16k")


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    return make_musdb_tree(tmp_path_factory.mktemp("musdb"), n_train=0, n_valid=0, n_test=2, seconds=3.0, rate=RATE)


@pytest.fixture(scope="module")
def musdb_run(tmp_path_factory, model, musdb_root):
    out = tmp_path_factory.mktemp("eval") / "musdb"
    code, output = run("--model", model, "--musdb-root", musdb_root, "--is-wav", "--out", out, "--quiet")
    assert code == 0, output
    return out, output


def musdb_references(root: Path, track: str) -> dict[str, np.ndarray]:
    sources = {name: sf.read(root / "test" / track / f"{name}.wav", dtype="float32")[0].T for name in SOURCES}
    return {"vocals": sources["vocals"], "accompaniment": sources["drums"] + sources["bass"] + sources["other"]}


def test_musdb_scores_are_museval_figures(musdb_run, musdb_root, model):
    out, output = musdb_run
    for method in ("unet16k", "oracle-irm", "mixture"):
        for stem in STEMS:
            assert f"{method}" in output and stem in output
    tracks = sorted(p.name for p in (musdb_root / "test").iterdir())
    assert sorted(p.stem for p in (out / "mixture").glob("*.json")) == tracks

    # the mixture baseline and the model, checked against museval called directly on the same arrays
    from unet_sep.separate.separator import Separator

    track = tracks[0]
    refs = musdb_references(musdb_root, track)
    mixture = refs["vocals"] + refs["accompaniment"]
    separated = Separator.from_pretrained(model, device="cpu").separate(mixture, RATE)
    for method, estimates in (("mixture", [mixture, mixture]), ("unet16k", [separated[s] for s in STEMS])):
        sdr, isr, sir, sar = framewise([refs[s] for s in STEMS], estimates, RATE)
        stored = load_track_json(out / method / f"{track}.json")
        for i, stem in enumerate(STEMS):
            for name, values in (("SDR", sdr), ("SIR", sir), ("SAR", sar), ("ISR", isr)):
                np.testing.assert_allclose(stored.frames[stem][name], values[i], atol=2e-3,
                                           err_msg=f"{method} {stem} {name}")
                assert stored.median(stem, name) == pytest.approx(np.nanmedian(values[i]), abs=2e-3)

    # SiSEC18 medians: ours equal museval's own aggregation (EvalStore: median over frames, then over tracks)
    table = summary(out)
    for method in ("unet16k", "oracle-irm", "mixture"):
        store = museval.EvalStore(frames_agg="median", tracks_agg="median")
        for path in sorted((out / method).glob("*.json")):
            store.add_track(museval.aggregate.json2df(json.loads(path.read_text()), path.stem))
        aggregated = store.agg_frames_tracks_scores()
        ours = sisec_medians(load_track_json(p) for p in sorted((out / method).glob("*.json")))
        for stem in STEMS:
            for metric in ("SDR", "SIR", "SAR", "ISR"):
                assert aggregated[(stem, metric)] == pytest.approx(ours[stem][metric], abs=1e-9)
                assert table[(method, stem)][metric] == pytest.approx(ours[stem][metric], abs=1e-4)
            assert table[(method, stem)]["tracks"] == 2


def test_oracle_irm_beats_the_mixture_for_every_stem(musdb_run):
    table = summary(musdb_run[0])
    for stem in STEMS:
        assert table[("oracle-irm", stem)]["SDR"] > table[("mixture", stem)]["SDR"] + 10, stem
        assert table[("oracle-irm", stem)]["SIR"] > table[("mixture", stem)]["SIR"] + 10, stem


def test_json_csv_and_png_outputs(musdb_run):
    out, _ = musdb_run
    schema = museval.TrackStore(track_name="x").schema
    for path in out.glob("*/*.json"):
        data = json.loads(path.read_text())
        jsonschema.validate(data, schema)
        assert [t["name"] for t in data["targets"]] == STEMS
        frames = data["targets"][0]["frames"]
        assert len(frames) == 3  # 3 s in 1 s windows
        assert [f["time"] for f in frames] == [0, 1, 2] and all(f["duration"] == 1 for f in frames)
        assert set(frames[0]["metrics"]) == {"SDR", "SIR", "SAR", "ISR"}
        assert not museval.aggregate.json2df(data, path.stem).empty
    rows = read_csv(out / "summary.csv")
    assert list(rows[0]) == ["method", "stem", "tracks", "SDR", "SIR", "SAR", "ISR"]
    assert {(r["method"], r["stem"]) for r in rows} == {
        (m, s) for m in ("unet16k", "oracle-irm", "mixture") for s in STEMS
    }
    assert len(read_csv(out / "tracks.csv")) == 3 * 2 * 2
    assert (out / "sdr_boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_reads_scores_back_without_separating(musdb_run, model, musdb_root, monkeypatch):
    out, _ = musdb_run
    before = (out / "summary.csv").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")}

    def refuse(*args, **kwargs):
        raise AssertionError("called again on a resumed track")

    monkeypatch.setattr("unet_sep.separate.separator.Separator.separate", refuse)
    monkeypatch.setattr(score_module, "bss_eval", refuse)
    code, output = run("--model", model, "--musdb-root", musdb_root, "--is-wav", "--out", out, "--quiet")
    assert code == 0, output
    assert "0 scored now, 6 read back" in output
    assert (out / "summary.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")} == stamps


def test_compare_with_stored_results_and_another_model(musdb_run, model, musdb_root, tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(musdb_run[0], out)
    # another method's results as museval's eval_mus_track writes them: <folder>/test/<track>.json
    stored = tmp_path / "other-method"
    shutil.copytree(out / "oracle-irm", stored / "test")
    other_model = small_model(tmp_path / "second-unet", seed=1)
    code, output = run("--model", model, "--musdb-root", musdb_root, "--is-wav", "--out", out, "--quiet",
                       "--compare", stored, "--compare", other_model, "--tracks", "1")
    assert code == 0, output
    assert "other-method" in output and "second-unet" in output
    assert "1 scored now, 3 read back" in output  # only the new model on the one track; the rest is read back
    table = summary(out)
    for stem in STEMS:
        assert table[("other-method", stem)]["SDR"] == table[("oracle-irm", stem)]["SDR"]
        assert table[("other-method", stem)]["tracks"] == table[("second-unet", stem)]["tracks"] == 1
    assert len(list((out / "second-unet").glob("*.json"))) == 1


def test_a_retrained_model_under_the_same_name_is_scored_again(musdb_run, musdb_root, tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(musdb_run[0], out)
    retrained = small_model(tmp_path / "unet16k", seed=2)  # same folder name, other weights
    code, output = run("--model", retrained, "--musdb-root", musdb_root, "--is-wav", "--out", out, "--quiet",
                       "--tracks", "1")
    assert code == 0, output
    assert "1 scored now, 2 read back" in output


def test_wiener_iterations_are_scored_as_their_own_method(musdb_run, model, musdb_root, tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(musdb_run[0], out)
    code, output = run("--model", model, "--musdb-root", musdb_root, "--is-wav", "--out", out, "--quiet",
                       "--wiener-iterations", "1", "--compare", out / "unet16k", "--tracks", "1")
    assert code == 0, output
    assert "1 scored now" in output  # the filtered model on the one track; the baselines are read back
    track = sorted(p.name for p in (musdb_root / "test").iterdir())[0]
    stored = load_track_json(out / "unet16k-wiener1" / f"{track}.json")

    from unet_sep.separate.separator import Separator

    refs = musdb_references(musdb_root, track)
    filtered = Separator.from_pretrained(model, device="cpu", wiener_iterations=1).separate(
        refs["vocals"] + refs["accompaniment"], RATE)
    sdr, _, _, _ = framewise([refs[s] for s in STEMS], [filtered[s] for s in STEMS], RATE)
    unfiltered = load_track_json(out / "unet16k" / f"{track}.json")
    for i, stem in enumerate(STEMS):
        np.testing.assert_allclose(stored.frames[stem]["SDR"], sdr[i], atol=2e-3, err_msg=stem)
        assert abs(stored.median(stem, "SDR") - unfiltered.median(stem, "SDR")) > 0.01, stem
    table = summary(out)
    assert table[("unet16k-wiener1", "vocals")]["tracks"] == 1 and table[("unet16k", "vocals")]["tracks"] == 1


@pytest.fixture(scope="module")
def stems_dir(tmp_path_factory) -> tuple[Path, Path]:
    """MIR-1K-like clips: mono vocals.wav + accompaniment.wav (accompaniment much louder than the voice)."""
    root = tmp_path_factory.mktemp("stems")
    names = {"test": ["singerA_1_01", "singerB_1_01"], "train": ["singerC_1_01"]}
    for i, (name, seconds) in enumerate(zip(names["test"] + names["train"], (3.0, 4.0, 3.0), strict=True)):
        sources = synthetic_sources(seconds, RATE, seed=100 + i, channels=1)
        (root / name).mkdir()
        sf.write(root / name / "vocals.wav", 0.5 * sources["vocals"].T, RATE, subtype="FLOAT")
        accompaniment = sources["drums"] + sources["bass"] + sources["other"]
        sf.write(root / name / "accompaniment.wav", accompaniment.T, RATE, subtype="FLOAT")
    split_file = root / "splits.json"
    split_file.write_text(json.dumps({"singers": names}))
    return root, split_file


def test_mir1k_mixing_nsdr_and_gnsdr(stems_dir, model, tmp_path):
    root, split_file = stems_dir
    out = tmp_path / "mir1k"
    code, output = run("--model", model, "--stems-dir", root, "--split-file", split_file, "--split-group", "singers",
                       "--split", "test", "--mir1k-mixing", "--out", out, "--quiet")
    assert code == 0, output
    assert "GNSDR" in output and "GSIR" in output and "GSAR" in output
    table = summary(out)
    for stem in STEMS:
        assert table[("mixture", stem)]["GNSDR"] == 0.0  # NSDR of the mixture itself
        assert table[("oracle-irm", stem)]["GNSDR"] > 5.0
        assert table[("unet16k", stem)]["tracks"] == 2

    # one clip by hand: 0 dB mixing, whole-clip museval SDR of the mixture, then the model's NSDR
    name = "singerB_1_01"
    refs = {s: sf.read(root / name / f"{s}.wav", dtype="float32")[0][None] for s in STEMS}
    energy = {s: float(np.sum(refs[s].astype(np.float64) ** 2)) for s in STEMS}
    mixed, gain = mix_at_0db(refs)
    assert gain == pytest.approx(math.sqrt(energy["vocals"] / energy["accompaniment"]), rel=1e-6)
    assert np.sum(mixed["accompaniment"].astype(np.float64) ** 2) == pytest.approx(energy["vocals"], rel=1e-4)
    mixture = mixed["vocals"] + mixed["accompaniment"]
    n = mixture.shape[-1]
    sdr, _, _, _ = framewise([mixed[s] for s in STEMS], [mixture, mixture], n)
    assert sdr.shape == (2, 1)
    assert abs(sdr[0, 0]) < 0.05  # the voice against its 0 dB mixture: SDR ~ 0 dB
    stored = load_track_json(out / "unet16k" / f"{name}.json")
    for i, stem in enumerate(STEMS):
        assert stored.mixture_sdr[stem] == pytest.approx(sdr[i, 0], abs=2e-3)
        assert stored.nsdr(stem) == pytest.approx(stored.whole[stem]["SDR"] - sdr[i, 0], abs=2e-3)
    assert stored.n_samples == n and stored.sample_rate == RATE

    # GNSDR: the length-weighted mean of the clips' NSDR
    rows = [r for r in read_csv(out / "tracks.csv") if r["method"] == "unet16k" and r["stem"] == "vocals"]
    weights = np.array([float(r["n_samples"]) for r in rows])
    nsdr = np.array([float(r["NSDR"]) for r in rows])
    assert sorted(weights) == [3 * RATE, 4 * RATE]
    assert table[("unet16k", "vocals")]["GNSDR"] == pytest.approx(float(np.sum(weights * nsdr) / weights.sum()),
                                                                  abs=1e-4)


def test_bad_arguments_one_line_and_exit_2(tmp_path, model, musdb_root, stems_dir):
    root, split_file = stems_dir
    out = tmp_path / "out"
    for args, message in [
        (["--model", model, "--out", out], "exactly one data set"),
        (["--model", model, "--out", out, "--musdb-root", musdb_root, "--stems-dir", root], "exactly one data set"),
        (["--model", model, "--out", out, "--musdb-root", tmp_path / "nope"], "no such folder"),
        (["--model", tmp_path / "nope", "--out", out, "--musdb-root", musdb_root, "--is-wav"], "no such model"),
        (["--model", model, "--out", out, "--musdb-root", musdb_root, "--is-wav", "--subset", "dev"], "--subset"),
        (["--model", model, "--out", out, "--stems-dir", root, "--split-file", split_file, "--split-group", "x"],
         "no group"),
        (["--model", model, "--out", out, "--stems-dir", root, "--split-file", split_file, "--split-group", "singers",
          "--split", "valid"], "no split 'valid'"),
        (["--model", model, "--out", out, "--stems-dir", root, "--split", "test"], "need --split-file"),
        (["--model", model, "--out", out, "--musdb-root", musdb_root, "--is-wav", "--compare", tmp_path], "--compare"),
        (["--model", model, "--out", out, "--musdb-root", musdb_root, "--is-wav", "--tracks", "0"], "--tracks"),
        (["--out", out, "--musdb-root", musdb_root], "--model and --out are required"),
        (["--model", model, "--out", out, "--musdb-root", musdb_root, "--is-wav", "--wiener-iterations", "11"],
         "--wiener-iterations: must be a whole number from 0 to 10"),
    ]:
        code, output = run(*args)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("error: "), (args, output)
    assert not out.exists()

    proc = subprocess.run([sys.executable, "-m", "unet_sep", "evaluate", "--model", str(model), "--stems-dir",
                           str(tmp_path / "missing"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no such folder" in proc.stderr


# ---- --data PATH and --data-option: any registered format, the shorthands mapped onto the same settings ----


def planned(model: Path, out: Path, **options) -> tuple:
    """What an evaluation plan holds about its data: (settings, description, tracks, rate, channels)."""
    evaluation = plan_evaluation(str(model), out, settings=SeparationSettings(device="cpu"), **options)
    return (evaluation.data, evaluation.description, evaluation.track_names, evaluation.sample_rate,
            evaluation.channels)


def test_data_path_plans_what_the_shorthands_plan(model, musdb_root, stems_dir, tmp_path):
    out = tmp_path / "out"
    hq = planned(model, out, data=musdb_root)  # recognised as MUSDB18-HQ: is_wav from the tree
    assert hq == planned(model, out, musdb_root=musdb_root, is_wav=True)
    assert hq[0].kind == "musdb" and hq[0].is_wav and hq[1] == "MUSDB18-HQ test" and len(hq[2]) == 2
    assert planned(model, out, data=musdb_root, data_options=["kind=musdb", "is_wav=true"], split="test") == hq

    root, split_file = stems_dir
    legacy = planned(model, out, stems_dir=root, split_file=split_file, split_group="singers", split="test",
                     mir1k_mixing=True)
    generic = planned(model, out, data=root, data_options=[f"split_file={split_file}", "split_group=singers"],
                      split="test", mir1k_mixing=True)
    assert generic == legacy
    assert legacy[1].endswith("singers/test, 0 dB mixing") and legacy[2] == ["singerA_1_01", "singerB_1_01"]
    assert planned(model, out, data=root)[2] == ["singerA_1_01", "singerB_1_01", "singerC_1_01"]  # no split file


def test_data_path_resumes_the_shorthand_run(musdb_run, model, musdb_root, tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(musdb_run[0], out)
    before = (out / "summary.csv").read_text()
    code, output = run("--model", model, "--data", musdb_root, "--out", out, "--quiet")
    assert code == 0, output
    assert "0 scored now, 6 read back" in output  # the same tracks, rate, channels and settings
    assert (out / "summary.csv").read_text() == before


def test_data_option_errors_one_line_and_exit_2(tmp_path, model, musdb_root, stems_dir):
    root, split_file = stems_dir
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    for args, message in [
        (["--data", root, "--musdb-root", musdb_root], "exactly one data set: --data PATH, --musdb-root ROOT"),
        (["--data", tmp_path / "nope"], "--data " + str(tmp_path / "nope") + ": no such folder"),
        (["--data", tmp_path / "empty"], "no data set format (musdb, folder) recognises this folder"),
        (["--data", root, "--is-wav"], "--is-wav applies to musdb data; " + str(root) + " is read as folder data"),
        (["--data", musdb_root, "--data-option", "split_group=singers"], "--data-option applies to folder data"),
        (["--data", musdb_root, "--split", "dev"], "--split must be one of test, train, valid, train+valid, got 'dev'"),
        (["--data", musdb_root, "--data-option", "kind=zip"], "data.kind must be one of musdb, folder, got 'zip'"),
        (["--data", root, "--subset", "test", "--split", "test"], "--split and --subset both set data.test_split"),
        (["--data", root, "--data-option", "colour=red"], "unknown key data.colour"),
        (["--data", root, "--data-option", "root=/x"], "--data-option root: give the data set's folder with --data"),
        (["--data", root, "--data-option", "cache_dir=/tmp"], "--data-option cache_dir: an evaluation decodes"),
        (["--data", root, "--data-option", "is_wav=maybe"], 'data.is_wav must be true or false, got "maybe"'),
        (["--data", root, "--data-option", "split_file"], "--data-option expects KEY=VALUE"),
        (["--data", root, "--data-option", "split_file=nope.json"], "--data-option nope.json: no such file"),
        (["--data", root, "--data-option", f"split_file={split_file}", "--data-option", "split_group=singers",
          "--split", "valid"], "no split 'valid'"),
        (["--data", root, "--data-option", "kind=musdb"], "MUSDB root"),
    ]:
        code, output = run("--model", model, "--out", out, *args)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("error: "), (args, output)
    assert not out.exists()
