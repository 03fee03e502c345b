"""The prepared GPU check (benchmarks/gpu_check.sh) runs its plumbing on the CPU: every step, at tiny sizes, gives its
rows in the one table (and the file the device tool brings back), and the time budget stops steps from starting
when it runs short. The GPU session itself has no time to find a broken step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env", "tests", "parity", "precision", "speed", "folders", "torchrun", "compile")


def gpu_check(tmp_path: Path, *args: str, budget: int) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GPU_CHECK_")}
    env.update(DEV="cpu", GPU_CHECK_TINY="1", GPU_CHECK_BUDGET=str(budget), PYTHON=sys.executable, OUT=str(tmp_path),
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def table_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step ") and "result" in line)
    return [line.split(None, 1) for line in lines[start + 2 :] if line.strip()]


def test_the_dry_run_gives_every_step_s_rows(tmp_path):
    done = gpu_check(tmp_path, budget=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout
    rows = table_rows(done.stdout)
    steps = [step for step, _ in rows]
    for step in STEPS:
        results = [rest for name, rest in rows if name == step]
        assert any("step time" in rest for rest in results), (step, results)
        assert not any(word in rest for rest in results for word in ("failed (exit", "stopped after", "not started"))
    assert steps[-1] == "total"
    text = done.stdout
    assert "fixture, exact mode, TF32 off (its choice)" in text
    assert "fixture, default mode, TF32 on (its choice)" in text
    assert re.search(r"compile +compilations / graphs / graph breaks +1 / 1 / 0; 0 after the first song", text)
    assert "2 readers, cpu" in text and "8 readers, cpu" in text
    assert "separate, 2 ranks" in text and "train 2 steps, 2 ranks" in text
    assert (tmp_path / "gpu_check.txt").read_text() == text[text.index("step "):]


def test_steps_are_not_started_when_the_budget_runs_short(tmp_path):
    done = gpu_check(tmp_path, "--steps", "env,compile,tests", budget=6)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [row for row in table_rows(done.stdout) if row[0] != "env"]
    assert [step for step, _ in rows] == ["compile", "tests", "total"], done.stdout
    assert "step time" in done.stdout  # env ran; then too little was left for the others
    assert "not started" in rows[0][1] and "not started" in rows[1][1], done.stdout



def test_a_step_that_outlasts_its_time_is_stopped_and_keeps_its_step_row(tmp_path, monkeypatch):
    """The driver's own handling of a step past its time (on a GPU: the budget's end), called directly."""
    monkeypatch.setenv("DEV", "cpu")
    monkeypatch.setenv("GPU_CHECK_TINY", "1")
    monkeypatch.setenv("GPU_CHECK_WORK", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    started = time.monotonic()
    rows = gpu_check.run_step("speed", timeout=1.0)  # importing torch alone takes longer
    assert time.monotonic() - started < 20
    assert rows[-1][:2] == ("speed", "step time") and "stopped after 1 s (time budget)" in rows[-1][2], rows
