"""Optional extras: pyproject.toml's extras list the packages ``unet_sep.extras.EXTRAS`` names, separation works
with none of them installed, and a command that needs a missing one says in one line which extra to install.

"Not installed" is simulated in a subprocess by an import hook that makes importing the extras' packages fail the
way a missing package does (``ModuleNotFoundError`` naming it) and records every attempt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unet_sep.extras import EXTRAS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The extras' packages, and stempeg, which only musdb brings in.
OPTIONAL = sorted({package for packages in EXTRAS.values() for package in packages} | {"stempeg"})

NOT_INSTALLED = f"""
import importlib.abc
import json
import sys

OPTIONAL = {OPTIONAL!r}
attempts = []


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in OPTIONAL:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return match.group(0).lower().replace("-", "_")


def _without_extras(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NOT_INSTALLED + code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)


def _run_cli(*args: object) -> str:
    """Code running ``unet-sep ARGS`` through the console entry point, then printing the import attempts."""
    argv = ["unet-sep", *map(str, args)]
    return (f"sys.argv = {argv!r}\n"
            "from unet_sep.cli import main\n"
            "try:\n"
            "    main()\n"
            "finally:\n"
            "    print(json.dumps(attempts))\n")


def test_pyproject_extras_match_the_extras_the_code_names():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        assert sorted(_requirement_name(r) for r in optional[extra]) == sorted(packages), extra
    assert set(optional) == set(EXTRAS) | {"test"}
    core = {_requirement_name(r) for r in project["dependencies"]}
    assert not core & set(OPTIONAL), "an optional package is among the core dependencies"
    assert {"pytest", "ruff", "mypy"} <= {_requirement_name(r) for r in optional["test"]}


def test_the_license_is_an_spdx_expression_that_the_build_backend_requires():
    """A ``license = {text = ...}`` table is deprecated by setuptools (removed after 2027-02-18); the SPDX string
    needs setuptools 77 or newer, so the build requirement says so."""
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
    setuptools = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools == ["setuptools>=77"]


def test_the_package_and_the_separator_import_none_of_the_extras(tmp_path):
    code = ("import unet_sep, unet_sep.separate.separator\n"
            "print(attempts, sorted(m for m in sys.modules if m.partition('.')[0] in OPTIONAL))")
    result = _without_extras(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[] []\n"


def test_separation_works_without_the_extras(tmp_path, tiny_model):
    rate = 44100
    t = np.arange(rate) / rate
    song = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(tmp_path / "song.wav", song.T, rate, subtype="PCM_16")

    result = _without_extras(tmp_path, _run_cli("separate", tmp_path / "song.wav", "--out", tmp_path / "out",
                                                "--model", tiny_model, "--device", "cpu", "--quiet"))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []  # never even tried to import one
    for stem in ("vocals", "accompaniment"):
        written, written_rate = sf.read(tmp_path / "out" / "song" / f"{stem}.wav")
        assert written_rate == rate and written.shape == song.T.shape


def test_evaluation_without_its_extra_is_one_line_naming_it(tmp_path, tiny_model):
    rate = 44100
    rng = np.random.default_rng(0)
    (tmp_path / "stems" / "song").mkdir(parents=True)
    for stem in ("vocals", "accompaniment"):
        sf.write(tmp_path / "stems" / "song" / f"{stem}.wav", 0.1 * rng.standard_normal((rate, 2)), rate)

    result = _without_extras(tmp_path, _run_cli("evaluate", "--model", tiny_model, "--stems-dir", tmp_path / "stems",
                                                "--out", tmp_path / "eval", "--device", "cpu", "--quiet"))

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unet-sep[eval]" in lines[0] and "not installed" in lines[0], lines[0]


def test_serve_without_its_extra_is_one_line_naming_it(tmp_path):
    result = _without_extras(tmp_path, _run_cli("serve", "--data", tmp_path / "data"))

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: unet-sep serve needs starlette, which is not installed: pip install 'unet-sep[serve]'"]
    assert not (tmp_path / "data").exists()


def test_live_from_a_file_works_without_the_extras_and_a_sound_card_names_its_extra(tmp_path, tiny_model):
    rate = 44100
    song = (0.2 * np.random.default_rng(1).standard_normal((rate // 2, 2))).astype(np.float32)
    sf.write(tmp_path / "song.wav", song, rate)

    files = _without_extras(tmp_path, _run_cli("live", tmp_path / "song.wav", "--no-pace", "--out", tmp_path / "out",
                                               "--model", tiny_model, "--device", "cpu"))
    assert files.returncode == 0, files.stderr
    assert json.loads(files.stdout.splitlines()[-1]) == []  # never even tried to import one
    assert sf.info(tmp_path / "out" / "vocals.wav").frames == rate // 2

    card = _without_extras(tmp_path, _run_cli("live", "device:", "--out", tmp_path / "out", "--model", tiny_model))
    assert card.returncode == 1 and "Traceback" not in card.stderr
    lines = card.stderr.strip().splitlines()
    assert len(lines) == 1 and "unet-sep[live]" in lines[0] and "not installed" in lines[0], card.stderr
