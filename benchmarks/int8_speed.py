"""Int8 U-Nets on the CPU against bf16 autocast: the table of docs/speed-and-memory.md ("Int8 on the CPU").

    python benchmarks/int8_speed.py                                 # eager and ONNX Runtime int8, f1 and f2
    PYTHONPATH=/path/to/torchao python benchmarks/int8_speed.py     # with PT2E (torchao is not a dependency)
    python benchmarks/int8_speed.py --clips 1 --calibration-clips 1 --seconds 5 --repeats 1   # a quick look

One row per int8 variant and number of outer U-Net levels kept float (``fN``: f1 keeps the first and last
convolutions float, 4 % of the multiply-adds; f2 also the next encoder and decoder blocks, 24 %), and bf16:

* speed: the model path, ``Separator.separate`` on ``--seconds`` of stereo 44.1 kHz held in memory, in
  Spleeter-exact mode, by the U-Nets of Spleeter's 2stems architecture at full size; best wall time and best
  process CPU time (all threads) of ``--repeats`` rounds in which the variants take turns, as bf16's time over the
  variant's (above 1: faster than bf16);
* quality: the bundled model's mean whole-clip SDR (museval v4) on ``--clips`` MIR-1K singers-split test clips,
  per stem and over both, as the loss against fp32.

Variants (STFT, masks and inverse STFT stay fp32; the decoders run as the sub-pixel convolutions the float path
runs): ``eager``, torch.ao eager static quantization (x86 backend, quint8 activations, per-channel qint8
weights); ``pt2e``, torchao's PT2E with X86InductorQuantizer lowered by Inductor to oneDNN int8 convolutions
(skipped with the reason without torchao); ``ort``, ONNX Runtime static quantization (QDQ, so QLinearConv).
Each is calibrated on ``--calibration-clips`` MIR-1K singers-split train clips, never scored, run through the
float network in the mode it is timed or scored in, so the observers see the segments the runner makes.

The table was measured with a longer script (``git show 5f63632:benchmarks/int8_speed.py``), which also timed the
U-Nets alone and Spleeter's warm graph, tried the x86 quantized ConvTranspose2d and scored the Spleeter
fixtures; its speed rows used Spleeter's bench checkpoint, where this script draws random weights of the same
shapes (the time of an int8 convolution does not depend on its weights' values).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py
from precision import SHARED, mir1k_mixture, mir1k_sdrs, mir1k_test_clips
from spleeter_speed import bench_input
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.errors import one_line  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.model.subpixel import phase_weights  # noqa: E402
from unet_sep.model.unet import UNet, same_padding  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402
from unet_sep.weights.registry import default_model_name, resolve_model  # noqa: E402

EXACT = {"segmentation": "spleeter", "mask_extension": "zeros"}  # Spleeter-exact mode, as the speed rows ran


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="eager,pt2e,ort", help="int8 variants: eager, pt2e, ort")
    p.add_argument("--float-levels", default="1,2", help="outer U-Net levels kept float (1 to 5), one build each")
    p.add_argument("--clips", type=int, default=10, help="MIR-1K test clips scored (0: no scores)")
    p.add_argument("--calibration-clips", type=int, default=8, help="MIR-1K train clips to calibrate on")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the timed song")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


# ---- the U-Nets in a form the quantizers take -------------------------------------------------------------
class Copy(nn.Module):
    """A copy between an encoder convolution and its BatchNorm: torchao's ``prepare_pt2e`` folds a BatchNorm into
    the convolution before it even when the convolution's raw output has other users (here the skip connection,
    which would then carry the BatchNorm too). A node between the two keeps them apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class FixedUNet(nn.Module):
    """One float :class:`UNet` rebuilt for segments of one size (every padding fixed) out of modules a quantizer can
    tell apart: per level the padded convolution, its BatchNorm and activation, the padded sub-pixel convolution
    and pixel shuffle with the activation and BatchNorm after them, and each concatenation as a module. The outer
    ``float_levels`` levels stay float: the quantize stub sits after encoder level ``float_levels - 1``, the
    dequantize stub before the concatenation with that level's skip."""

    def __init__(self, unet: UNet, frames: int, bins: int, float_levels: int, copy_skips: bool) -> None:
        super().__init__()
        unet = copy.deepcopy(unet).eval()
        self.float_levels = float_levels
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.sizes = [(frames, bins)]
        self.down, self.down_post = nn.ModuleList(), nn.ModuleList()
        for block in unet.encoder:
            (top, bottom), (left, right) = (same_padding(n, block.kernel_size, 2) for n in self.sizes[-1])
            self.down.append(nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), block.conv))
            post = [Copy(), block.bn, block.activation] if copy_skips else [block.bn, block.activation]
            self.down_post.append(nn.Identity() if block.bn is None else nn.Sequential(*post))
            self.sizes.append((-(-self.sizes[-1][0] // 2), -(-self.sizes[-1][1] // 2)))
        self.up, self.up_post = nn.ModuleList(), nn.ModuleList()
        for index, block in enumerate(unet.decoder):
            top, left = (same_padding(n, block.kernel_size, 2)[0] for n in self.sizes[-2 - index])
            kernel, bias, (pad_top, pad_bottom, pad_left, pad_right) = phase_weights(
                block.deconv.weight, block.deconv.bias, block.kernel_size, top, left)
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[-2:]))
            conv.weight.data, conv.bias.data = kernel, bias
            self.up.append(nn.Sequential(nn.ZeroPad2d((pad_left, pad_right, pad_top, pad_bottom)), conv,
                                         nn.PixelShuffle(2)))
            self.up_post.append(nn.Sequential(block.activation, block.bn))
        self.cats = nn.ModuleList(torch.ao.nn.quantized.FloatFunctional() for _ in unet.decoder)
        self.mask_conv = unet.mask_conv

    def float_modules(self) -> list[nn.Module]:
        """The modules that stay float (``float_levels``)."""
        levels, first = self.float_levels, len(self.up) - self.float_levels  # first: the first float decoder level
        return [*self.down[:levels], *self.down_post[:levels], *self.up[first:], *self.up_post[first:],
                *self.cats[first - 1:], self.mask_conv]

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        levels, last = self.float_levels, len(self.up) - 1
        hidden, skips = magnitude, []
        for index, (down, post) in enumerate(zip(self.down, self.down_post, strict=True)):
            raw = down(hidden)
            skips.append(raw)
            hidden = post(raw)
            if index == levels - 1:
                hidden = self.quant(hidden)
        skips.pop()  # the bottleneck is not a skip
        for index, (up, post) in enumerate(zip(self.up, self.up_post, strict=True)):
            height, width = self.sizes[-2 - index]
            hidden = post(up(hidden)[..., :height, :width])
            if index == last - levels:
                hidden = self.dequant(hidden)
            if index < len(skips):
                hidden = self.cats[index].cat([skips[-1 - index], hidden], dim=1)
        return self.mask_conv(hidden)


class FixedLogits(nn.Module):
    """A model's :class:`FixedUNet` s: magnitudes ``[N, C, T, F]`` -> stacked mask logits ``[S, N, C, T, F]``."""

    def __init__(self, net: StemsNet, config: ModelConfig, float_levels: int, copy_skips: bool) -> None:
        super().__init__()
        self.unets = nn.ModuleList(FixedUNet(unet, config.segment_frames, config.frequency_bins, float_levels,
                                             copy_skips) for unet in net.unets)

    def float_names(self) -> list[str]:
        """Qualified names of the modules that stay float (:meth:`FixedUNet.float_modules`)."""
        keep = {id(module) for unet in self.unets for module in unet.float_modules()}
        return [name for name, module in self.named_modules() if id(module) in keep]

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        return torch.stack([unet(magnitude) for unet in self.unets])


class MaskedNetwork(nn.Module):
    """What the runner calls: logits from any callable (int8 module, compiled graph, ONNX session), then the
    model's soft masks times the magnitude in fp32, as :class:`StemsNet` does. The runner prepares a
    :class:`StemsNet` for its segments with ``inference_network`` (a copy, each U-Net's decoders made sub-pixel):
    this network is built for them already, so it has no U-Nets to rewrite and is its own copy."""

    unets = ()

    def __deepcopy__(self, memo: dict) -> MaskedNetwork:
        return self

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor], mask_activation: str) -> None:
        super().__init__()
        self.__dict__["logits"] = logits  # not a submodule: the runner's .to() must leave packed weights alone
        self.mask_activation = mask_activation

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        logits = self.logits(magnitude).float()
        masks = torch.softmax(logits, dim=0) if self.mask_activation == "softmax" else torch.sigmoid(logits)
        return masks * magnitude.unsqueeze(0)


# ---- the int8 builds --------------------------------------------------------------------------------------
def eager_int8(logits: FixedLogits, calibration: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.ao eager static quantization, x86 backend (HistogramObserver activations at the full 8 bits, which
    VNNI computes without saturation; per-channel weights)."""
    from torch.ao import quantization as tq

    torch.backends.quantized.engine = "x86"
    logits.qconfig = tq.QConfig(activation=tq.HistogramObserver.with_args(reduce_range=False),
                                weight=tq.default_per_channel_weight_observer)
    floats = set(logits.float_names())
    for name, module in logits.named_modules():
        if any(name == f or name.startswith(f + ".") for f in floats):
            module.qconfig = None
    prepared = tq.prepare(logits)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return tq.convert(prepared)


def pt2e_int8(logits: FixedLogits, calibration: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchao PT2E with X86InductorQuantizer, compiled by Inductor (oneDNN int8 convolutions, freezing)."""
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    inductor_config.freezing = True  # needed for the int8 convolutions' weight packing
    # With its layout optimisation Inductor's frozen graph asserts contiguous strides on a float (mkldnn)
    # convolution's channels-last output; with one audio channel, packed float weights fail the same way.
    inductor_config.layout_optimization = False
    inductor_config.cpp.weight_prepack = calibration[0].shape[1] > 1
    calibration = [batch.contiguous() for batch in calibration]  # one layout: the frozen graph fixes it
    example = torch.cat([calibration[0]] * 2)  # a batch of 1 would make export fix the batch size at 1
    with torch.no_grad():
        graph = torch.export.export(logits, (example,),
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in logits.float_names():
        quantizer.set_module_name_qconfig(name, None)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
        compiled = torch.compile(convert_pt2e(prepared))
        compiled(example)  # the compilation, here rather than in the first timed call
    return lambda magnitude: compiled(magnitude.contiguous())


def ort_int8(logits: FixedLogits, calibration: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """ONNX Runtime: the fixed-shape U-Nets exported and statically quantized (QDQ, uint8 activations, int8
    per-channel weights, so QLinearConv), run by unet-sep's own ONNX Runtime session wrapper."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from unet_sep.separate.onnx_network import OnnxNetwork
    from unet_sep.weights.onnx_export import INPUT_NAME, OUTPUT_NAME

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = [{INPUT_NAME: batch.contiguous().numpy()} for batch in calibration]

        def get_next(self) -> dict | None:
            return self.items.pop() if self.items else None

    with tempfile.TemporaryDirectory(prefix="unet-sep-int8-") as folder, torch.no_grad():
        float_path, int8_path = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        torch.onnx.export(logits, (calibration[0].contiguous(),), float_path, dynamo=False, opset_version=17,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {1: "batch"}})
        # ONNX scopes name each module level: unets.0.up.4 -> /unets.0/up.4/
        scopes = tuple("/" + re.sub(r"^(unets\.\d+)\.", r"\1/", name) + "/" for name in logits.float_names())
        excluded = [node.name for node in onnx.load(str(float_path)).graph.node if node.name.startswith(scopes)]
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)  # the quantizer's advice on every BatchNorm's axis, through the root logger
        try:
            quantize_static(str(float_path), str(int8_path), Batches(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            nodes_to_exclude=excluded)
        finally:
            root.setLevel(level)
        return OnnxNetwork(int8_path.read_bytes(), torch.device("cpu"))


BUILDERS = {"eager": eager_int8, "pt2e": pt2e_int8, "ort": ort_int8}


def calibration_batches(net: StemsNet, config: ModelConfig, count: int, **options) -> list[torch.Tensor]:
    """The magnitude batches the runner gives the U-Nets for ``count`` MIR-1K singers-split train clips."""
    clips = json.loads((SHARED / "mir1k" / "splits.json").read_text())["singers"]["train"]
    batches: list[torch.Tensor] = []
    # A hook, not a wrapper: the runner runs a copy of the network it is given (hooks and all) made for segments.
    hook = net.register_forward_pre_hook(lambda _module, inputs: batches.append(inputs[0].detach().clone()))
    try:
        separator = Separator(net, config, device="cpu", **options)
        for clip in clips[:: max(1, len(clips) // count)][:count]:
            mixture, _, rate = mir1k_mixture(clip)
            separator.separate(mixture, rate)
    finally:
        hook.remove()
    return batches


def separators(net: StemsNet, config: ModelConfig, args: argparse.Namespace, floats: list[str],
               calibration_clips: int, **options) -> dict[str, Separator]:
    """``{row: Separator}``: ``floats`` (fp32, bf16: autocast of the float network), then every int8 variant at
    every number of float levels; a build that fails is reported in one line and left out."""
    rows = {precision: Separator(net, config, device="cpu", precision=precision, **options) for precision in floats}
    calibration = calibration_batches(net, config, calibration_clips, **options)
    for variant in args.variants:
        for levels in args.float_levels:
            row, started = f"{variant} f{levels}", time.perf_counter()
            try:
                with warnings.catch_warnings():  # the quantizers' deprecation notes, once per build
                    warnings.simplefilter("ignore")
                    logits = FixedLogits(net, config, levels, copy_skips=variant == "pt2e").eval()
                    network = MaskedNetwork(BUILDERS[variant](logits, calibration), config.mask_activation)
            except Exception as error:  # a quantizer that is missing or cannot take these U-Nets: said, not fatal
                print(f"{row}: not built: {type(error).__name__}: {one_line(error)[:160]}", flush=True)
                continue
            rows[row] = Separator(network, config, device="cpu", **options)
            print(f"{row}: built in {time.perf_counter() - started:.1f} s", flush=True)
    return rows


def speed(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall and process CPU seconds of each row's model path, the rows taking turns after a warm-up each."""
    config = spleeter.spleeter_model_config("spleeter:2stems")
    torch.manual_seed(0)
    # calibrated on 2 clips, as the table's speed rows were: the time of an int8 build does not depend on them
    rows = separators(StemsNet(config).eval(), config, args, ["bf16"], min(2, args.calibration_clips), **EXACT)
    audio = np.ascontiguousarray(bench_input(args.seconds).T)
    for separator in rows.values():
        separator.separate(audio, 44100)
    wall = {row: float("inf") for row in rows}
    cpu = dict(wall)
    for _ in range(args.repeats):
        for row, separator in rows.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            separator.separate(audio, 44100)
            wall[row] = min(wall[row], time.perf_counter() - started)
            cpu[row] = min(cpu[row], time.process_time() - started_cpu)
    return wall, cpu


def sdr_losses(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Each row's mean whole-clip SDR loss against fp32 per stem, and over both stems (``"both"``)."""
    clips = mir1k_test_clips(args.clips) if args.clips else []
    if not clips:
        return {}
    config, net = load_model(resolve_model(default_model_name()))
    rows = separators(net, config, args, ["fp32", "bf16"], args.calibration_clips)
    means = {row: {stem: float(np.mean(values)) for stem, values in by_stem.items()}
             for row, by_stem in mir1k_sdrs(rows, clips).items()}
    losses = {row: {stem: means["fp32"][stem] - value for stem, value in by_stem.items()}
              for row, by_stem in means.items() if row != "fp32"}
    for by_stem in losses.values():
        by_stem["both"] = float(np.mean(list(by_stem.values())))
    print(f"fp32: mean whole-clip SDR {np.mean(list(means['fp32'].values())):.3f} dB over both stems, "
          f"{len(clips)} MIR-1K test clips")
    return losses


def main() -> None:
    args = parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(BUILDERS))
    if unknown:
        sys.exit(f"error: --variants: unknown {', '.join(unknown)}; choose from {', '.join(BUILDERS)}")
    args.float_levels = [int(level) for level in args.float_levels.split(",") if level]
    if not all(1 <= level <= 5 for level in args.float_levels):
        sys.exit(f"error: --float-levels: each from 1 to 5 (of the U-Net's 6 levels), got {args.float_levels}")
    torch.set_num_threads(args.threads)
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    print(f"CPU: {cpu_name()}; " + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}"
                                             for flag in ("avx512_vnni", "avx512_bf16", "amx_int8"))
          + f"; torch {torch.__version__}; {args.threads} threads", flush=True)
    wall, cpu = speed(args)
    losses = sdr_losses(args)
    print(f"\nmodel path: {args.seconds:g} s stereo 44.1 kHz, Spleeter-exact, 2stems at full size, best of "
          f"{args.repeats}; SDR loss against fp32, bundled model, {args.clips} MIR-1K test clips")
    print(f"{'variant':<10}{'path s':>8}{'vs bf16':>9}{'CPU s':>8}{'vs bf16':>9}"
          f"{'loss vocals':>13}{'accomp.':>9}{'both':>8}")
    for row in sorted(set(wall) | set(losses), key=lambda r: (r != "bf16", r)):
        loss = losses.get(row, {})
        timing = (f"{wall[row]:>8.3f}{wall['bf16'] / wall[row]:>8.2f}x{cpu[row]:>8.3f}{cpu['bf16'] / cpu[row]:>8.2f}x"
                  if row in wall else f"{'-':>8}{'-':>9}{'-':>8}{'-':>9}")
        print(f"{row:<10}{timing}" + "".join(f"{loss[k]:>{w}.3f}" if k in loss else f"{'-':>{w}}"
                                             for k, w in (("vocals", 13), ("accompaniment", 9), ("both", 8))))


if __name__ == "__main__":
    main()
