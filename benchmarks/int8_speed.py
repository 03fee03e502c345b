"""Int8 U-Nets on the CPU (VNNI) against fp32 and bf16 autocast: their speed and the SDR they cost.

    python benchmarks/int8_speed.py                                   # 2stems speed, SDR on 10 MIR-1K test clips
    python benchmarks/int8_speed.py --models 2stems,4stems --spleeter-python /work/spleeter-venv/bin/python
    PYTHONPATH=/path/to/torchao python benchmarks/int8_speed.py       # with the PT2E variant (torchao)

Variants of the U-Nets (STFT, masks and inverse STFT stay fp32 in every one):

* ``fp32``: the default path (eager, channels-last, decoders as sub-pixel convolutions).
* ``bf16``: ``precision="bf16"`` (autocast of the U-Nets).
* ``int8-eager-deconv``: ``torch.ao.quantization`` eager static quantization, x86 backend: every Conv2d,
  ConvTranspose2d, BatchNorm, activation and concatenation in int8 (quint8 activations, qint8 weights;
  ConvTranspose2d takes per-tensor weights only, "Per channel weight observer is not supported yet for
  ConvTranspose"), the input quantized and the mask logits dequantized inside each U-Net.
* ``int8-eager-subpixel``: the same with each decoder's transposed convolution as the sub-pixel convolution the
  float path runs (per-channel weights), then ``pixel_shuffle``.
* ``int8-pt2e``: torchao's PT2E (``prepare_pt2e``/``convert_pt2e`` with ``X86InductorQuantizer``; torch 2.13
  has no ``torch.ao.quantization.quantize_pt2e`` any more) lowered by ``torch.compile`` (Inductor, freezing) to
  oneDNN int8 convolutions, decoders in sub-pixel form (the quantizer leaves ConvTranspose2d in float). Needs
  torchao (not a dependency of unet-sep); skipped with the reason when it cannot be imported.
* ``int8-ort``: ONNX Runtime, the sub-pixel U-Nets exported to ONNX and quantized statically
  (``quantize_static``, QDQ, uint8 activations, int8 per-channel weights: QLinearConv); the QOperator format
  fails on the sub-pixel export (``'NoneType' object has no attribute 'data_type'``) and quantizes no
  ConvTranspose.

Every int8 variant is calibrated on real audio that is never scored: ``--calibration-clips`` MIR-1K singers-split
train clips (for the 44.1 kHz stereo models the Separator resamples them and duplicates the channel), run through
the float network in the mode that is timed or scored, so the observers see the very segments the runner makes.

Printed: (1) which variants were built and which failed, with why; (2) per model (Spleeter's full-size
architectures, Spleeter's own bench checkpoints with ``--spleeter-python``, random weights otherwise): the U-Nets
alone on one CPU batch (2 segments of 512 x 1024) and the whole model path (``Separator.separate`` on 30 s of
stereo 44.1 kHz in memory, Spleeter-exact mode), each variant timed in turn ``--repeats`` times, best kept;
(3) SDR: the bundled model on ``--clips`` MIR-1K singers-split test clips (museval v4, whole clip, against the
true stems) and the Spleeter fixtures (SDR against Spleeter's output, SNR against fp32), helpers shared with
benchmarks/precision.py; (4) with ``--spleeter-python``, Spleeter's warm graph (bench.py's ``b2`` row) timed in
the same run, and the ratio of every variant's model path to it (the issue's target: 2stems >= 3x).

``fN``: the outer N levels of every U-Net stay float (f1: the first and last convolutions, 4 % of the
multiply-adds; f2: also the next encoder and decoder blocks, 24 %). ``--float-levels 0`` quantizes everything.

Measured on AMD EPYC (Zen 4), 2 cores, avx512_vnni and avx512_bf16 (no AMX); torch 2.13 CPU, onnxruntime 1.32,
torchao 0.18; 2 threads. The machine was shared with 2-3 other jobs (load 4-7 on 2 cores): every time is several
times what an idle machine gives (bf16 path 2.67 s here, 0.25 s idle in the README), so the ratios, from
interleaved runs, best of 3, matter, and the process CPU time (all threads) is the steadier of them. Speed:
``PYTHONPATH=<torchao> python benchmarks/int8_speed.py --models 2stems --spleeter-python
/work/spleeter-venv/bin/python --clips 0 --no-fixtures --variants fp32,bf16,int8-eager-subpixel,int8-pt2e,int8-ort``
(Spleeter's bench checkpoint, U-Nets on [2, 2, 512, 1024], model path on 30 s):

    variant                 U-Nets s  vs bf16  path s  vs bf16  vs Spleeter warm  path CPU s  vs bf16
    fp32                       2.282    0.46x   4.792    0.56x        0.69x          3.166    0.76x
    bf16                       1.055    1.00x   2.674    1.00x        1.24x          2.411    1.00x
    int8-eager-subpixel f1     1.523    0.69x   4.030    0.66x        0.82x          2.651    0.91x
    int8-eager-subpixel f2     1.740    0.61x   3.213    0.83x        1.03x          2.620    0.92x
    int8-pt2e f1               0.890    1.19x   2.615    1.02x        1.27x          1.727    1.40x
    int8-pt2e f2               1.008    1.05x   2.958    0.90x        1.12x          1.937    1.24x
    int8-ort f1                1.193    0.88x   3.476    0.77x        0.95x          2.210    1.09x
    int8-ort f2                1.183    0.89x   3.621    0.74x        0.91x          2.303    1.05x
    Spleeter warm graph (b2)                    3.312

SDR: ``python benchmarks/int8_speed.py --models '' --clips 10 --calibration-clips 8 --variants
fp32,bf16,int8-eager-deconv,int8-eager-subpixel,int8-ort`` (and ``--no-fixtures --variants fp32,int8-pt2e`` with
torchao); bundled model, 10 MIR-1K test clips, mean whole-clip SDR loss against fp32 (8.833 dB), both stems:

    bf16 0.004 | eager-subpixel f1 0.235, f2 0.034 | pt2e f1 0.131, f2 0.017 | ort f1 0.461, f2 0.402 |
    eager-deconv f1 8.191, f2 7.933 (the x86 quantized ConvTranspose2d, per-tensor weights, is not usable)

Spleeter fixtures, 2stems/4stems/5stems, 11 stems (SDR against Spleeter's output, range over the stems; from
``--models '' --clips 2 --calibration-clips 2 --float-levels 0,1,2 --variants
fp32,bf16,int8-eager-deconv,int8-eager-subpixel,int8-ort``, the longer run above was stopped before this table):
fp32 99.1-103.4, bf16 34.1-48.1, eager-subpixel f1 29.7-41.2 and f2 29.8-47.3, ORT f1/f2 15.7-29.7,
eager-deconv f1/f2 12.1-27.4, every variant at f0 (all int8) 9.5-26.1 dB.

Decision: int8 is not kept (``--precision`` stays fp32/bf16/fp16). The bar was >= 1.3x bf16's model path at
<= 0.05 dB SDR loss. Only keeping the two outer levels float holds the SDR (f2, 0.02-0.03 dB), and then a
quarter of the arithmetic runs in fp32 while the int8 part saves little over bf16: the best f2 (PT2E, 0.017 dB)
is 0.90x bf16 in wall time and 1.24x in CPU time. The faster f1 (PT2E 1.02x / 1.40x) loses 0.13-0.46 dB: int8
activations on linear magnitudes lose the quiet bins. Eager torch.ao pays for quantize/dequantize, BatchNorm,
padding and concatenation as separate passes (slower than bf16), ONNX Runtime's QLinearConv is no faster. The
2stems target (>= 3x Spleeter's warm graph) is not reached by any variant in this loaded run (bf16 1.24x here,
2.4x on the idle machine in the README).

Found on the way: torchao's ``prepare_pt2e`` folds a BatchNorm into the convolution before it even when that
convolution's raw output has other users (Spleeter's skips), giving wrong outputs (:class:`Copy`); Inductor's
frozen graph asserts wrong strides on a float mkldnn convolution (layout optimisation; one-channel inputs).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py
from precision import SHARED, mir1k_mixture, mir1k_sdrs, mir1k_test_clips, spleeter_fixtures, whole_sdr
from spleeter_speed import BENCH, bench_input, distinct_stems
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.errors import one_line  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.model.subpixel import phase_weights  # noqa: E402
from unet_sep.model.unet import UNet, same_padding  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402
from unet_sep.weights.registry import default_model_name, resolve_model  # noqa: E402

VARIANTS = ("fp32", "bf16", "int8-eager-deconv", "int8-eager-subpixel", "int8-pt2e", "int8-ort")
KEEP_SPEEDUP, KEEP_LOSS_DB = 1.3, 0.05  # the bar: int8 is kept if it beats bf16 by this at this SDR loss


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="2stems", help="Spleeter architectures to time (2stems, 4stems; '' for none)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--clips", type=int, default=10, help="MIR-1K test clips scored (0: no MIR-1K scoring)")
    p.add_argument("--calibration-clips", type=int, default=8, help="MIR-1K train clips to calibrate on")
    p.add_argument("--no-fixtures", action="store_true", help="skip the Spleeter fixtures")
    p.add_argument("--float-levels", default="1,2",
                   help="outer U-Net levels kept float, one int8 build per value (0: all int8; 1: the first and "
                        "last convolutions; 2: also the next encoder and decoder blocks)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--spleeter-python", help="python of Spleeter's venv: time its warm graph in the same run")
    return p.parse_args()


# ---- the U-Nets in a form the quantizers take -------------------------------------------------------------
class Copy(nn.Module):
    """A copy between an encoder convolution and its BatchNorm. torchao's ``prepare_pt2e`` folds every BatchNorm
    that follows a convolution into the convolution's weights without looking at the convolution's other users,
    and here the raw convolution output is also the skip connection: folded, the skips carry the BatchNorm too
    (about 0.9 relative error on the bundled model's logits). A node between the two keeps them apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class FixedUNet(nn.Module):
    """One float :class:`UNet` rebuilt for segments of one size (every padding fixed) out of modules a quantizer can
    tell apart: per level the padded convolution, the BatchNorm and activation after it, the upsampling (padded
    sub-pixel convolution and pixel shuffle with ``subpixel``, as the float inference path runs it; otherwise the
    transposed convolution) with the activation and BatchNorm after it, and each concatenation as a module the
    eager quantizer observes. The outer ``float_levels`` levels stay float (:meth:`float_modules`): the stubs sit
    after encoder level ``float_levels - 1`` and before the concatenation with that level's skip."""

    def __init__(self, unet: UNet, frames: int, bins: int, subpixel: bool, float_levels: int,
                 copy_skips: bool = False) -> None:
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
        self.crops = []
        for index, block in enumerate(unet.decoder):
            top, left = (same_padding(n, block.kernel_size, 2)[0] for n in self.sizes[-2 - index])
            if subpixel:  # the float path's own sub-pixel weights, as a module the quantizers see
                kernel, bias, (pad_top, pad_bottom, pad_left, pad_right) = phase_weights(
                    block.deconv.weight, block.deconv.bias, block.kernel_size, top, left)
                conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[-2:]))
                conv.weight.data, conv.bias.data = kernel, bias
                self.up.append(nn.Sequential(nn.ZeroPad2d((pad_left, pad_right, pad_top, pad_bottom)), conv,
                                             nn.PixelShuffle(2)))
                self.crops.append((0, 0))
            else:
                self.up.append(block.deconv)
                self.crops.append((top, left))
            self.up_post.append(nn.Sequential(block.activation, block.bn))
        self.cats = nn.ModuleList(torch.ao.nn.quantized.FloatFunctional() for _ in unet.decoder)
        self.mask_conv = unet.mask_conv

    def float_modules(self) -> list[nn.Module]:
        """The modules that stay float (``float_levels``)."""
        levels = self.float_levels
        if levels == 0:
            return []
        first = len(self.up) - levels  # the first float decoder level
        return [*self.down[:levels], *self.down_post[:levels], *self.up[first:], *self.up_post[first:],
                *self.cats[first - 1:], self.mask_conv]

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        levels, last = self.float_levels, len(self.up) - 1
        hidden = self.quant(magnitude) if levels == 0 else magnitude
        skips = []
        for index, (down, post) in enumerate(zip(self.down, self.down_post, strict=True)):
            raw = down(hidden)
            skips.append(raw)
            hidden = post(raw)
            if index == levels - 1:
                hidden = self.quant(hidden)
        skips.pop()  # the bottleneck is not a skip
        for index, (up, post, (top, left)) in enumerate(zip(self.up, self.up_post, self.crops, strict=True)):
            height, width = self.sizes[-2 - index]
            hidden = post(up(hidden)[..., top : top + height, left : left + width])
            if levels and index == last - levels:
                hidden = self.dequant(hidden)
            if index < len(skips):
                hidden = self.cats[index].cat([skips[-1 - index], hidden], dim=1)
        logits = self.mask_conv(hidden)
        return self.dequant(logits) if levels == 0 else logits


class FixedLogits(nn.Module):
    """A model's :class:`FixedUNet` s: magnitudes ``[N, C, T, F]`` -> stacked mask logits ``[S, N, C, T, F]``."""

    def __init__(self, net: StemsNet, config: ModelConfig, subpixel: bool, float_levels: int,
                 copy_skips: bool = False) -> None:
        super().__init__()
        self.unets = nn.ModuleList(FixedUNet(unet, config.segment_frames, config.frequency_bins, subpixel,
                                             float_levels, copy_skips) for unet in net.unets)

    def float_names(self) -> list[str]:
        """Qualified names of the modules that stay float (:meth:`FixedUNet.float_modules`)."""
        keep = {id(module) for unet in self.unets for module in unet.float_modules()}
        return [name for name, module in self.named_modules() if id(module) in keep]

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        return torch.stack([unet(magnitude) for unet in self.unets])


class MaskedNetwork(nn.Module):
    """What the runner calls: logits from any callable (int8 module, compiled graph, ONNX session), then the
    model's soft masks times the magnitude in fp32, as :class:`StemsNet` does."""

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor], mask_activation: str) -> None:
        super().__init__()
        self.__dict__["logits"] = logits  # not a submodule: the runner's .to() must leave packed weights alone
        self.mask_activation = mask_activation

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        logits = self.logits(magnitude).float()
        masks = torch.softmax(logits, dim=0) if self.mask_activation == "softmax" else torch.sigmoid(logits)
        return masks * magnitude.unsqueeze(0)


class Recorder(nn.Module):
    """The float network, keeping a copy of every batch the runner gives it (the calibration data)."""

    def __init__(self, net: StemsNet) -> None:
        super().__init__()
        self.net = net
        self.batches: list[torch.Tensor] = []

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        self.batches.append(magnitude.detach().clone())
        return self.net(magnitude)


# ---- building the variants --------------------------------------------------------------------------------
def eager_int8(logits: FixedLogits, calibration: list[torch.Tensor]) -> nn.Module:
    """torch.ao eager static quantization, x86 backend (HistogramObserver activations at the full 8 bits, which
    VNNI computes without saturation; per-channel weights, per-tensor for ConvTranspose2d)."""
    from torch.ao import quantization as tq

    torch.backends.quantized.engine = "x86"
    activation = tq.HistogramObserver.with_args(reduce_range=False)
    logits.qconfig = tq.QConfig(activation=activation, weight=tq.default_per_channel_weight_observer)
    per_tensor = tq.QConfig(activation=activation, weight=tq.default_weight_observer)
    for module in logits.modules():
        if isinstance(module, nn.ConvTranspose2d):
            module.qconfig = per_tensor
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
    # With its layout optimisation, Inductor's frozen graph asserts contiguous strides on the output of a float
    # (mkldnn) convolution that comes out channels-last (an AssertionError in assert_size_stride at run time).
    inductor_config.layout_optimization = False
    # With one audio channel every [N, 1, T, F] input is also channels-last, the packed float convolution's output
    # comes out channels-last all the same and the same assertion fails: leave float weights unpacked there.
    inductor_config.cpp.weight_prepack = calibration[0].shape[1] > 1
    calibration = [batch.contiguous() for batch in calibration]  # one layout: Inductor's frozen graph fixes it
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
    with torch.no_grad():
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
        quantize_static(str(float_path), str(int8_path), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=excluded)
        return OnnxNetwork(int8_path.read_bytes(), torch.device("cpu"))


INT8_BUILDERS = {  # variant: (builder, decoders as sub-pixel convolutions, a Copy before each encoder BatchNorm)
    "int8-eager-deconv": (eager_int8, False, False),
    "int8-eager-subpixel": (eager_int8, True, False),
    "int8-pt2e": (pt2e_int8, True, True),
    "int8-ort": (ort_int8, True, False),
}


def build_variants(names: list[str], net: StemsNet, config: ModelConfig, calibration: list[torch.Tensor],
                   levels: list[int], failures: dict[str, str], label: str) -> dict[str, tuple[nn.Module, str]]:
    """``{variant: (network for the Separator, its precision)}``, each int8 variant once per number of float
    levels (named ``"int8-... fN"``); those that fail are left out and the reason kept in ``failures``."""
    built: dict[str, tuple[nn.Module, str]] = {}
    for name in names:
        if name in ("fp32", "bf16"):
            built[name] = (net, name)
            continue
        builder, subpixel, copy_skips = INT8_BUILDERS[name]
        for level in levels:
            key, started = f"{name} f{level}", time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    logits = FixedLogits(net, config, subpixel, level, copy_skips).eval()
                    built[key] = (MaskedNetwork(builder(logits, calibration), config.mask_activation), "fp32")
            except Exception as error:  # a quantizer or backend that cannot take these U-Nets: reported, not fatal
                failures[f"{key} ({label})"] = f"{type(error).__name__}: {one_line(error)[:160]}"
                print(f"[{label}] {key}: failed: {failures[f'{key} ({label})']}", flush=True)
                continue
            print(f"[{label}] {key}: built in {time.perf_counter() - started:.1f} s", flush=True)
    return built


def calibration_batches(net: StemsNet, config: ModelConfig, count: int, **options) -> list[torch.Tensor]:
    """The magnitude batches the runner gives the U-Nets for ``count`` MIR-1K singers-split train clips."""
    splits = json.loads((SHARED / "mir1k" / "splits.json").read_text())["singers"]["train"]
    recorder = Recorder(net)
    separator = Separator(recorder, config, device="cpu", **options)
    for clip in splits[:: max(1, len(splits) // count)][:count]:
        mixture, _, rate = mir1k_mixture(clip)
        separator.separate(mixture, rate)
    return recorder.batches


# ---- timing -----------------------------------------------------------------------------------------------
def best_times(calls: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each call's best wall time and best process CPU time (all threads) over ``repeats`` rounds, the calls
    taking turns (after one warm-up each). On a shared machine the CPU time is the steadier of the two."""
    for call in calls.values():
        call()
    wall = {name: float("inf") for name in calls}
    cpu = dict(wall)
    for _ in range(repeats):
        for name, call in calls.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            call()
            wall[name] = min(wall[name], time.perf_counter() - started)
            cpu[name] = min(cpu[name], time.process_time() - started_cpu)
    return wall, cpu


def spleeter_warm(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Spleeter's warm graph (bench.py's b2 row, best of ``--repeats``) per model, its checkpoints left in
    ``workdir``."""
    out = workdir / "spleeter_bench.json"
    command = [args.spleeter_python, str(BENCH), "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--duration", str(args.seconds), "--models", args.models, "--rows", "graph", "--workdir",
               str(workdir), "--json", str(out)]
    print("running Spleeter:", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return {row["model"]: min(row["times_s"]) for row in json.loads(out.read_text())["rows"]
            if row["row"] == "b2 session.run warm (full separate)"}


def time_model(name: str, args: argparse.Namespace, workdir: Path, failures: dict[str, str]) -> dict:
    """U-Nets alone and model path of every variant for Spleeter's architecture ``name``."""
    if (workdir / name / "checkpoint").is_file():
        config, net = spleeter.load_spleeter(workdir / name, f"spleeter:{name}", name=f"spleeter:{name}")
        net, source = distinct_stems(net), "Spleeter's bench checkpoint"  # as benchmarks/spleeter_speed.py does
    else:
        config = spleeter.spleeter_model_config(f"spleeter:{name}")
        torch.manual_seed(0)
        net, source = StemsNet(config).eval(), "random weights"
    exact = dict(segmentation="spleeter", mask_extension="zeros")
    calibration = calibration_batches(net, config, 2, **exact)
    variants = build_variants(args.variants, net, config, calibration, args.float_levels, failures, name)
    separators = {v: Separator(module, config, device="cpu", precision=precision, **exact)
                  for v, (module, precision) in variants.items()}
    audio = np.ascontiguousarray(bench_input(args.seconds).T)
    batch = Recorder(net)
    Separator(batch, config, device="cpu", **exact).separate(audio, 44100)
    segments = batch.batches[0]  # one CPU batch of the song, as the runner lays it out
    with torch.inference_mode():
        unets, _ = best_times({v: (lambda s=s: s.runner.forward(segments)) for v, s in separators.items()},
                              args.repeats)
    path, path_cpu = best_times({v: (lambda s=s: s.separate(audio, 44100)) for v, s in separators.items()},
                                args.repeats)
    return {"source": source, "segments": tuple(segments.shape), "unets": unets, "path": path, "path_cpu": path_cpu}


# ---- scores -----------------------------------------------------------------------------------------------
def mir1k_scores(args: argparse.Namespace, failures: dict[str, str]) -> dict[str, dict[str, float]]:
    """Mean whole-clip SDR per variant and stem of the bundled model on ``--clips`` MIR-1K test clips."""
    clips = mir1k_test_clips(args.clips)
    if not clips:
        return {}
    args.bundled = default_model_name()
    config, net = load_model(resolve_model(args.bundled))
    calibration = calibration_batches(net, config, args.calibration_clips)
    variants = build_variants(args.variants, net, config, calibration, args.float_levels, failures, "bundled")
    separators = {v: Separator(module, config, device="cpu", precision=precision)
                  for v, (module, precision) in variants.items()}
    sdr = mir1k_sdrs(separators, clips)
    return {v: {stem: float(np.mean(values)) for stem, values in by_stem.items()} for v, by_stem in sdr.items()}


def fixture_scores(args: argparse.Namespace, failures: dict[str, str]) -> list[tuple[str, str, dict]]:
    """Per fixture model and stem: each variant's SDR against Spleeter's output and SNR against fp32."""
    rows = []
    exact = dict(segmentation="spleeter", mask_extension="zeros")
    for model, config, net, audio, references in spleeter_fixtures():
        calibration = calibration_batches(net, config, args.calibration_clips, **exact)
        variants = build_variants(args.variants, net, config, calibration, args.float_levels, failures,
                                  f"fixture {model}")
        outputs = {v: Separator(module, config, device="cpu", precision=precision, **exact).separate(audio, 44100)
                   for v, (module, precision) in variants.items()}
        for stem in config.stems:
            rows.append((model, stem, {v: (whole_sdr(references[stem], out[stem]),
                                           snr_db(outputs["fp32"][stem], out[stem])) for v, out in outputs.items()}))
    return rows


# ---- tables -----------------------------------------------------------------------------------------------
def print_speed(name: str, result: dict, spleeter_s: float | None, args: argparse.Namespace) -> None:
    print(f"\n{name} ({result['source']}): U-Nets on one batch {list(result['segments'])}; model path = "
          f"Separator.separate of {args.seconds:g} s stereo 44.1 kHz, Spleeter-exact; best of {args.repeats}")
    print(f"{'variant':<26}{'U-Nets s':>9}{'vs bf16':>8}{'path s':>8}{'x realtime':>11}{'vs fp32':>8}{'vs bf16':>8}"
          f"{'vs Spleeter':>12}{'path CPU s':>11}{'vs bf16':>8}")
    unets, path, cpu = result["unets"], result["path"], result["path_cpu"]
    for variant in path:
        versus = f"{spleeter_s / path[variant]:>11.2f}x" if spleeter_s else f"{'-':>12}"
        print(f"{variant:<26}{unets[variant]:>9.3f}{unets.get('bf16', np.nan) / unets[variant]:>7.2f}x"
              f"{path[variant]:>8.3f}{args.seconds / path[variant]:>11.1f}"
              f"{path.get('fp32', np.nan) / path[variant]:>7.2f}x{path.get('bf16', np.nan) / path[variant]:>7.2f}x"
              f"{versus}{cpu[variant]:>11.3f}{cpu.get('bf16', np.nan) / cpu[variant]:>7.2f}x")
    if spleeter_s:
        print(f"{'Spleeter warm graph (b2)':<26}{'-':>9}{'':>8}{spleeter_s:>8.3f}{args.seconds / spleeter_s:>11.1f}")


def print_scores(mir1k: dict[str, dict[str, float]], fixtures: list[tuple[str, str, dict]],
                 args: argparse.Namespace) -> None:
    if mir1k:
        stems = list(mir1k["fp32"])
        print(f"\nMIR-1K singers-split test, {args.clips} clips, bundled model {args.bundled}: mean whole-clip "
              "SDR (dB) against the true stems, and its loss against fp32")
        print(f"{'variant':<26}" + "".join(f"{stem:>14}{'loss':>8}" for stem in stems))
        for variant, scores in mir1k.items():
            print(f"{variant:<26}" + "".join(f"{scores[stem]:>14.3f}{mir1k['fp32'][stem] - scores[stem]:>8.3f}"
                                             for stem in stems))
    if fixtures:
        print("\n../shared/data/spleeter-ref, Spleeter-exact: SDR (dB) against Spleeter's own output (fp32 matches it "
              "to ~100 dB; the SNR against fp32 is within 0.1 dB of these)")
        print(f"{'variant':<26}" + "".join(f"{model[0] + ':' + stem[:5]:>9}" for model, stem, _ in fixtures))
        for variant in fixtures[0][2]:
            print(f"{variant:<26}" + "".join(f"{scores[variant][0]:>9.1f}" for _, _, scores in fixtures))


def decide(speed: dict[str, dict], mir1k: dict[str, dict[str, float]]) -> None:
    """The issue's rule: keep int8 only if its model path beats bf16 by KEEP_SPEEDUP at <= KEEP_LOSS_DB loss."""
    print()
    names = sorted({v for r in speed.values() for v in r["path"]} | set(mir1k))
    for variant in [v for v in names if v.startswith("int8")]:
        ratios = [r["path"]["bf16"] / r["path"][variant] for r in speed.values()
                  if variant in r["path"] and "bf16" in r["path"]]
        loss = max((mir1k["fp32"][s] - mir1k[variant][s] for s in mir1k.get(variant, {})), default=None)
        speedup = f"{min(ratios):.2f}x" if ratios else "not timed"
        lost = f"{loss:.3f} dB" if loss is not None else "not scored"
        keep = bool(ratios) and loss is not None and min(ratios) >= KEEP_SPEEDUP and loss <= KEEP_LOSS_DB
        print(f"{variant}: model path {speedup} bf16's speed (bar >= {KEEP_SPEEDUP}x), worst MIR-1K stem loss {lost} "
              f"(bar <= {KEEP_LOSS_DB} dB): {'meets the bar' if keep else 'does not meet the bar'}")


def main() -> None:
    args = parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    args.float_levels = [int(level) for level in args.float_levels.split(",") if level]
    torch.set_num_threads(args.threads)
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    print(f"CPU: {cpu_name()}; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}"
                                             for f in ("avx512_vnni", "avx512_bf16", "amx_int8"))
          + f"; torch {torch.__version__}; {args.threads} threads")
    failures: dict[str, str] = {}
    speed, warm = {}, {}
    with tempfile.TemporaryDirectory(prefix="unet-sep-int8-bench-") as folder:
        models = [m for m in args.models.split(",") if m]
        if args.spleeter_python and models:
            warm = spleeter_warm(args, Path(folder))
        for name in models:  # each table printed as soon as it is measured
            speed[name] = time_model(name, args, Path(folder), failures)
            print_speed(name, speed[name], warm.get(name), args)
    mir1k = mir1k_scores(args, failures) if args.clips else {}
    print_scores(mir1k, [], args)
    fixtures = [] if args.no_fixtures else fixture_scores(args, failures)
    print_scores({}, fixtures, args)
    print("\nint8 builds: " + ("every one built" if not failures else f"{len(failures)} failed"))
    for variant, reason in failures.items():
        print(f"failed: {variant}: {reason}")
    decide(speed, mir1k)


if __name__ == "__main__":
    main()
