"""The separation's settings (unet_sep/separate/settings.py): each checked when made, each resolved once against a
model and the device, each default declared once: in SeparationSettings' fields, which Separator's keywords, the
CLI's options and their help read."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import typing
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from unet_sep import ModelConfig, Separator, UNetConfig
from unet_sep.cli import app
from unet_sep.config import DEFAULT_WIENER_WINDOW, MAX_WIENER_ITERATIONS
from unet_sep.errors import SettingError
from unet_sep.separate.settings import (
    CPU_BATCH_SIZE,
    DEFAULT_BACKEND,
    GPU_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MAX_OVERLAP,
    SeparationOptions,
    SeparationSettings,
)

CHECKOUT = Path(__file__).resolve().parents[1]
FIELDS = [field.name for field in dataclasses.fields(SeparationSettings)]
# The options of `unet-sep separate` that set a field (the others, channels_last, optimize and onnx_path, are the
# API's; an ONNX file comes in as --model).
CLI_FIELDS = ["device", "segmentation", "overlap", "batch_size", "mask_extension", "precision", "compile", "backend",
              "wiener_iterations", "wiener_window"]


# ---- checked when made ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "name", "reason"), [
    (dict(precision="fp8"), "precision", "'fp8' is not a precision; choose from fp32, bf16, fp16"),
    (dict(backend="tf"), "backend", "'tf' is not a backend; choose from torch, onnxruntime"),
    (dict(onnx_path="model.onnx"), "onnx_path", "an ONNX file is run by the onnxruntime backend only"),
    (dict(device="banana"), "device", "'banana' is not a device; choose from auto, cpu, cuda, cuda:N or mps"),
    (dict(segmentation="chunks"), "segmentation", "'chunks' is not a segmentation; choose from overlap, spleeter"),
    (dict(overlap=0.9), "overlap", "must be a fraction of the segment from 0 to 0.75, got 0.9"),
    (dict(batch_size=0), "batch_size", "must be from 1 to 256 segments, got 0"),
    (dict(batch_size=257), "batch_size", "must be from 1 to 256 segments, got 257"),
    (dict(mask_extension="mirror"), "mask_extension",
     "'mirror' is not a mask extension; choose from zeros, average, last, capped_average"),
    (dict(wiener_iterations=11), "wiener_iterations", "must be a whole number from 0 to 10, got 11"),
    (dict(wiener_iterations=1.5), "wiener_iterations", "must be a whole number from 0 to 10, got 1.5"),
    (dict(wiener_iterations=True), "wiener_iterations", "must be a whole number from 0 to 10, got True"),
    (dict(wiener_window=2), "wiener_window",
     "must be 0 (the whole track) or a number of STFT frames of 4 or more, got 2"),
    (dict(wiener_window=-8), "wiener_window",
     "must be 0 (the whole track) or a number of STFT frames of 4 or more, got -8"),
])
def test_each_setting_is_checked_when_made(settings, name, reason):
    with pytest.raises(SettingError) as caught:
        SeparationSettings(**settings)
    assert (caught.value.setting, caught.value.reason) == (name, reason)
    valid = SeparationSettings(device="cpu")
    with pytest.raises(SettingError):  # a changed copy is checked too
        dataclasses.replace(valid, **settings)


def test_what_onnxruntime_cannot_honour_is_refused_with_it():
    pytest.importorskip("onnxruntime")
    for settings, name in [(dict(precision="bf16"), "precision"), (dict(compile=True), "compile"),
                           (dict(optimize=True), "optimize")]:
        SeparationSettings(**settings)  # fine with torch
        with pytest.raises(SettingError) as caught:
            SeparationSettings(backend="onnxruntime", **settings)
        assert caught.value.setting == name
    # Spleeter's mode takes no overlap: one given is not looked at, as before.
    assert SeparationSettings(segmentation="spleeter", overlap=0.9).overlap == 0.9


def test_from_pretrained_checks_the_settings_before_reading_the_model(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(SettingError, match="^precision: "):
        Separator.from_pretrained(missing, precision="fp8")
    with pytest.raises(SettingError, match="^backend: .*is an ONNX file, which only onnxruntime runs"):
        Separator.from_pretrained(tmp_path / "model.onnx", backend="torch")


# ---- resolved once, against the model and the device ---------------------------------------------------------------


def _config(**fields) -> ModelConfig:
    return ModelConfig(unet=UNetConfig(filters=[4, 8, 16]), segment_frames=64, **fields)


def test_resolve_fills_the_models_and_the_devices_defaults():
    config = _config(mask_extension="last", wiener_iterations=2)
    default = SeparationSettings(device="cpu").resolve(config)
    assert default.device == torch.device("cpu") and default.batch_size == CPU_BATCH_SIZE
    assert (default.mask_extension, default.wiener.iterations, default.wiener.window) == ("last", 2,
                                                                                         DEFAULT_WIENER_WINDOW)
    assert (default.backend, default.channels_last, default.optimize, default.tf32) == (DEFAULT_BACKEND, True, False,
                                                                                        True)
    assert (default.plan.frames, default.plan.multiple, default.plan.fit_end) == (64, 8, True)
    assert not default.wiener.softmask
    exact = SeparationSettings(device="cpu", segmentation="spleeter").resolve(config)
    assert (exact.wiener.window, exact.wiener.softmask, exact.tf32, exact.plan.hop) == (0, True, False, 64)
    given = SeparationSettings(device="cpu", mask_extension="zeros", wiener_iterations=0, wiener_window=64,
                               batch_size=5, channels_last=False, optimize=True, compile=True).resolve(config)
    assert (given.mask_extension, given.wiener.iterations, given.wiener.window) == ("zeros", 0, 64)
    assert (given.batch_size, given.channels_last, given.optimize, given.compile) == (5, False, False, True)


def test_the_batch_size_follows_the_device():
    assert SeparationSettings(device="cpu").resolve(_config()).batch_size == CPU_BATCH_SIZE
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU's default batch size is not resolved here")
    assert SeparationSettings(device="cuda").resolve(_config()).batch_size == GPU_BATCH_SIZE


def test_onnxruntime_runs_contiguous_segments():
    pytest.importorskip("onnxruntime")
    assert not SeparationSettings(device="cpu", backend="onnxruntime").resolve(_config()).channels_last


def test_the_runner_and_its_streams_use_the_resolved_settings(tiny_model):
    separator = Separator.from_pretrained(tiny_model, device="cpu", mask_extension="average", wiener_iterations=1)
    runner = separator.runner
    engine = runner.engine(1)
    assert engine.mask_extension == "average" and engine.wiener is not None
    assert engine.wiener.settings is runner.settings.wiener and runner.settings.wiener.iterations == 1
    assert engine.precision == runner.settings.precision and engine.device == runner.device


# ---- each default declared once -----------------------------------------------------------------------------------


def test_the_keywords_type_checkers_see_are_the_fields():
    """Separator's and from_pretrained's settings keywords are typed by SeparationOptions: the same names and types
    as the dataclass's fields (whose defaults are the only ones)."""
    namespace = {"torch": torch, "Path": Path}
    options = typing.get_type_hints(SeparationOptions, localns=namespace)
    fields = typing.get_type_hints(SeparationSettings, localns=namespace)
    assert list(options) == FIELDS and options == fields
    for function in (Separator.__init__, Separator.from_pretrained):
        assert "**options: Unpack[SeparationOptions]" in inspect.getsource(function), function.__qualname__


def _separate_command():
    return typer.main.get_command(app).commands["separate"]  # type: ignore[attr-defined]


def test_the_cli_options_default_to_the_fields():
    params = {param.name: param for param in _separate_command().params}
    params["compile"] = params.pop("compile_net")
    for name in CLI_FIELDS:
        assert params[name].default == getattr(SeparationSettings, name), name


def test_the_cli_help_shows_each_default_from_the_settings():
    result = CliRunner().invoke(app, ["separate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    helped = " ".join(result.output.split())
    for name in ("device", "segmentation", "precision"):
        default = getattr(SeparationSettings, name)
        shown = re.search(rf"--{name} <str> .*?\[default: ([^\]]+)\]", helped)
        assert shown and shown.group(1) == default, name
    assert "--compile Run" in helped and "[default: True]" not in helped  # off: a flag
    # None defaults: what they become, from the constants resolve() uses.
    assert f"1 to {MAX_BATCH_SIZE}. Default: {CPU_BATCH_SIZE} on the CPU, {GPU_BATCH_SIZE} on a GPU." in helped
    assert f"from 0 to {MAX_OVERLAP} (cross-faded). Default: one stride step" in helped
    assert f"Default: {DEFAULT_BACKEND}; onnxruntime for a .onnx --model" in helped
    assert f"else {DEFAULT_WIENER_WINDOW} frames" in helped and f"0 to {MAX_WIENER_ITERATIONS}" in helped
    assert "64 frames" not in helped  # the stride step is the model's (2^depth), not one model's number


# Functions with a parameter named like a field that is not the separation's setting.
NOT_SEPARATION = {
    ("unet_sep/cli/train.py", "train"): "the training's device",
    ("unet_sep/train/loop.py", "__init__"): "the training's device",
    ("unet_sep/weights/checkpoint.py", "load_model"): "where a model's weights are loaded",
    ("hubconf.py", "network"): "where the network's weights are loaded (load_model's)",
}


def _declared_defaults(path: Path) -> list[tuple[str, str, str]]:
    """(function, setting, default) for every parameter of a function in ``path`` named after a field (a typer
    option by its option's name) whose default is a value of its own: any literal but None, or the field's own
    default written out again. A reference to the field (``SeparationSettings.precision``) is not one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        positional = node.args.posonlyargs + node.args.args
        pairs = list(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults, strict=True))
        pairs += [(arg, default) for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
                  if default]
        for arg, default in pairs:
            name = arg.arg
            if isinstance(default, ast.Call) and getattr(default.func, "attr", "") == "Option":
                spelled = [a.value for a in default.args[1:] if isinstance(a, ast.Constant)]
                name = spelled[0].removeprefix("--").replace("-", "_") if spelled else name
                default = default.args[0]
            if name not in FIELDS or not isinstance(default, ast.Constant):
                continue
            if default.value is not None or getattr(SeparationSettings, name) is None:
                found.append((node.name, name, repr(default.value)))
    return found


def test_each_default_is_declared_once(tmp_path):
    sources = sorted((CHECKOUT / "unet_sep").rglob("*.py")) + [CHECKOUT / "hubconf.py"]
    restated = []
    for path in sources:
        relative = path.relative_to(CHECKOUT).as_posix()
        if relative == "unet_sep/separate/settings.py":
            continue
        restated += [f"{relative}:{function} {name}={default}" for function, name, default in _declared_defaults(path)
                     if (relative, function) not in NOT_SEPARATION]
    assert not restated, "defaults of separation settings outside SeparationSettings: " + "; ".join(restated)
    # What the check finds: a default written out again (as main's Separator, runner and CLI had them), a None the
    # field does not default to is "not given", a reference to the field is the field's.
    sample = tmp_path / "sample.py"
    sample.write_text("def f(precision='fp32', overlap=None, backend='torch', device=None):\n    pass\n"
                      "def g(segmentation=SeparationSettings.segmentation, precision: str = typer.Option('fp32')):\n"
                      "    pass\n")
    assert _declared_defaults(sample) == [("f", "precision", "'fp32'"), ("f", "overlap", "None"),
                                          ("f", "backend", "'torch'"), ("g", "precision", "'fp32'")]
