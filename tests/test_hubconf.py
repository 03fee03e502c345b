"""torch.hub: ``hubconf.py`` at the repository root gives a Separator, from a local checkout that is not installed
and in the ``torch.hub.load("<owner>/unet-sep", ...)`` form (from torch.hub's cache, so offline)."""

from __future__ import annotations

import importlib.util
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import music_like
from unet_sep import Separator, load_model
from unet_sep.errors import SettingError
from unet_sep.weights.entries import ModelNotFoundError
from unet_sep.weights.registry import default_model_name, resolve_model

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

CHECKOUT = Path(__file__).resolve().parents[1]
CLI_ONLY = {"typer"}  # dependencies of the command line alone, which torch.hub users do not need


@pytest.fixture(scope="module")
def hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", CHECKOUT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dependencies_are_the_project_s_and_importable(hubconf):
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = {requirement.split(">")[0].split("=")[0].split("<")[0].strip() for requirement in project}
    assert sorted(hubconf.dependencies) == sorted(name.replace("-", "_") for name in names - CLI_ONLY)
    assert all(importlib.util.find_spec(name) is not None for name in hubconf.dependencies)


def test_the_default_model_is_the_bundled_one(hubconf):
    assert hubconf.DEFAULT_MODEL == default_model_name()


def test_a_checkout_that_is_not_installed_loads_through_torch_hub(tmp_path):
    """In a Python that sees the venv's packages but not the editable install of unet-sep, run from another
    folder: torch.hub imports the checkout's own package, and its Separator separates as the installed one."""
    mixture = music_like(2.0, 44100)
    np.save(tmp_path / "mixture.npy", mixture)
    script = f"""
import sys
sys.path.extend({site.getsitepackages()!r})  # without their .pth files: no editable install of unet-sep
import numpy as np, torch
try:
    import unet_sep
    raise SystemExit("unet_sep is importable without the checkout")
except ImportError:
    pass
separator = torch.hub.load({str(CHECKOUT)!r}, "separator", source="local", device="cpu")
import unet_sep
print(type(separator).__name__, unet_sep.__file__, separator.stems)
np.savez("stems.npz", **separator.separate(np.load("mixture.npy"), 44100))
"""
    proc = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    kind, package, stems = proc.stdout.split(maxsplit=2)
    assert kind == "Separator" and Path(package) == CHECKOUT / "unet_sep" / "__init__.py"
    assert stems.strip() == "['vocals', 'accompaniment']"
    theirs = np.load(tmp_path / "stems.npz")
    ours = Separator.from_pretrained("mir1k-vocals-accompaniment", device="cpu").separate(mixture, 44100)
    assert sorted(theirs.files) == sorted(ours)
    for stem, samples in ours.items():
        assert np.array_equal(theirs[stem], samples), stem


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """torch.hub's cache holding this checkout as the download of <owner>/unet-sep's main branch."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "owner_unet-sep_main").symlink_to(CHECKOUT, target_is_directory=True)
    return "owner/unet-sep:main"


def test_the_github_form_lists_explains_and_loads(hub_cache, tmp_path):
    assert torch.hub.list(hub_cache, trust_repo=True) == ["network", "separator"]
    assert "separator.separate(waveform, sample_rate)" in torch.hub.help(hub_cache, "separator", trust_repo=True)
    separator = torch.hub.load(hub_cache, "separator", name="mir1k-vocals-accompaniment", device="cpu",
                               batch_size=3, trust_repo=True)
    assert isinstance(separator, Separator) and separator.stems == ["vocals", "accompaniment"]
    assert separator.runner.settings.batch_size == 3 and separator.sample_rate == 16000
    # the name as the first argument after the entry's (torch.hub.load's own "model" is the entry's name)
    assert torch.hub.load(hub_cache, "separator", "mir1k-vocals-accompaniment", "cpu", trust_repo=True).stems == [
        "vocals", "accompaniment"]
    with pytest.raises(ModelNotFoundError, match="^no-such-model: no such model folder"):
        torch.hub.load(hub_cache, "separator", name="no-such-model", trust_repo=True)
    with pytest.raises(SettingError, match="^overlap: "):
        torch.hub.load(hub_cache, "separator", overlap=0.9, device="cpu", trust_repo=True)


def test_the_network_entry_is_load_model_s(hub_cache):
    config, net = torch.hub.load(hub_cache, "network", trust_repo=True)
    their_config, their_net = load_model(resolve_model(default_model_name()))
    assert config == their_config and not net.training
    ours, theirs = net.state_dict(), their_net.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
