"""Stems bit for bit as they were: the bundled model and the Spleeter reference checkpoints (2stems, 4stems) in
Spleeter-exact mode (back-to-back segments, masks zero above the band) and in the default overlapped mode (and 2stems
with the Wiener filter in each mode), through the Python API and through ``unet-sep separate``, compared by the
sha256 of every stem's float32 samples against ``tests/data/settings_identity.json``.

The digests are a record of the code's output at one commit (the file names it), made with

    python tests/test_settings_identity.py --regen

so a change meant to keep the numbers (a refactor) shows here any stem it moves, even by one bit. float32 results
depend on the CPU's kernels (oneDNN picks them by instruction set) and on torch's version, so the digests are kept per
(torch version, CPU capability); on a machine without an entry of its own the tests skip, saying so. torch runs on
one thread here, so the core count does not enter either.

The input is the Spleeter reference input (the real song excerpt, 12.3 s of 44.1 kHz stereo: 534 STFT frames, so
two segments for Spleeter's U-Nets in either mode; the bundled model resamples it to 16 kHz mono, several segments).
Fixtures from ../shared; the tests skip with the reason when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

TESTS = Path(__file__).resolve().parent
DIGESTS = TESTS / "data" / "settings_identity.json"
REGEN = "python tests/test_settings_identity.py --regen"
RATE = 44100

# The settings of each mode, as keyword arguments of Separator.from_pretrained; the CLI's options are their names.
MODES: dict[str, dict] = {
    "exact": {"segmentation": "spleeter", "mask_extension": "zeros"},
    "default": {},
}
WIENER_MODES: dict[str, dict] = {
    "exact-wiener": {"segmentation": "spleeter", "mask_extension": "zeros", "wiener_iterations": 1},
    "default-wiener": {"wiener_iterations": 1},
}
CASES = ([("bundled", mode) for mode in MODES] + [("2stems", mode) for mode in {**MODES, **WIENER_MODES}]
         + [("4stems", mode) for mode in MODES])


def machine_key() -> str:
    """What float32 results depend on besides the code: torch's version and the CPU kernels' instruction set."""
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def digest(samples: np.ndarray) -> str:
    """sha256 (first 16 hex digits) of ``[channels, samples]`` as C-ordered float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()[:16]


def model_reference(model: str, folder: Path) -> str:
    """What ``--model`` / ``from_pretrained`` take for ``model``: the bundled model's name, or a Spleeter reference
    checkpoint converted into ``folder`` (once)."""
    from unet_sep.weights.registry import default_model_name

    if model == "bundled":
        name = default_model_name()
        if name is None:
            pytest.skip("no bundled model in this installation")
        return name
    from tf_bundle import require_ref
    from unet_sep.weights.checkpoint import save_model
    from unet_sep.weights.spleeter import load_spleeter

    ref = require_ref()
    target = folder / model
    if not (target / "config.json").is_file():
        config, net = load_spleeter(ref / model, ref / model / "config.json", name=f"spleeter:{model}")
        save_model(target, net, config)
    return str(target)


def mixture() -> np.ndarray:
    """The Spleeter reference input, ``[2, 542430]`` float32."""
    from tf_bundle import require_ref

    return np.ascontiguousarray(np.load(require_ref() / "input.npy").T)


def api_digests(reference: str, settings: dict) -> dict[str, str]:
    """Digests of the stems ``Separator.separate`` gives for the mixture."""
    from unet_sep.separate.separator import Separator

    separator = Separator.from_pretrained(reference, device="cpu", **settings)
    return {stem: digest(samples) for stem, samples in separator.separate(mixture(), RATE).items()}


def cli_digests(reference: str, settings: dict, folder: Path) -> dict[str, str]:
    """Digests of the stems ``unet-sep separate`` writes (float WAV) for the mixture written as a float WAV."""
    from typer.testing import CliRunner

    from unet_sep.cli import app

    song = folder / "song.wav"
    if not song.is_file():
        sf.write(song, mixture().T, RATE, subtype="FLOAT")
    out = folder / "stems"
    options = [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]
    result = CliRunner().invoke(app, ["separate", str(song), "--out", str(out), "--model", reference, "--device", "cpu",
                                      "--threads", "1", "--overwrite", "--quiet", *options])
    assert result.exit_code == 0, result.output
    written = sorted((out / "song").glob("*.wav"))
    return {path.stem: digest(sf.read(path, dtype="float32", always_2d=True)[0].T) for path in written}


def case_digests(model: str, mode: str, folder: Path) -> dict[str, str]:
    """``{"api/<stem>": digest, "cli/<stem>": digest}`` of one model in one mode."""
    settings = {**MODES, **WIENER_MODES}[mode]
    reference = model_reference(model, folder)
    found = {f"api/{stem}": value for stem, value in api_digests(reference, settings).items()}
    found.update({f"cli/{stem}": value for stem, value in cli_digests(reference, settings, folder).items()})
    return found


@pytest.fixture(scope="module")
def stored() -> dict:
    """The digests recorded for this machine's torch and CPU capability (a skip naming the command when none are)."""
    record = json.loads(DIGESTS.read_text())
    key = machine_key()
    if key not in record["digests"]:
        pytest.skip(f"{DIGESTS.name} holds no digests for {key} (it has {', '.join(record['digests'])}): make them "
                    f"from the commit before a change with {REGEN}")
    return record["digests"][key]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("identity")


@pytest.fixture
def one_thread():
    """torch on one thread (the CLI's --threads sets it for the process too), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("model", "mode"), CASES, ids=[f"{model}-{mode}" for model, mode in CASES])
def test_stems_are_bit_identical(stored, work, one_thread, model, mode):
    found = case_digests(model, mode, work)
    expected = stored[f"{model}/{mode}"]
    assert sorted(found) == sorted(expected)
    moved = [name for name in expected if found[name] != expected[name]]
    assert not moved, f"{model} in {mode} mode: stems no longer bit-identical: {', '.join(moved)}"
    # The CLI and the API give the same samples.
    assert all(found[f"cli/{name[4:]}"] == found[name] for name in found if name.startswith("api/"))


def regenerate() -> None:
    """Record this checkout's digests for this machine's key in the JSON file (other machines' entries are kept)."""
    import tempfile

    from unet_sep.atomic import write_text_atomic

    torch.set_num_threads(1)
    record = json.loads(DIGESTS.read_text()) if DIGESTS.is_file() else {"digests": {}}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=TESTS, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        digests = {f"{model}/{mode}": case_digests(model, mode, Path(folder)) for model, mode in CASES}
    record["made_by"] = REGEN
    record["digests"][machine_key()] = {"commit": commit, **digests}
    DIGESTS.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(DIGESTS, json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(digests)} cases for {machine_key()} (commit {commit}) to {DIGESTS}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regen", action="store_true", help=f"write this checkout's digests into {DIGESTS.name}")
    if parser.parse_args().regen:
        regenerate()
    else:
        sys.exit(pytest.main([__file__, "-q"]))
