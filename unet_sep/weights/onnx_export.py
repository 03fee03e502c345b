"""A model's U-Nets as one ONNX file, for ONNX Runtime (:mod:`unet_sep.separate.onnx_network` runs it).

The file holds :class:`~unet_sep.model.stems.StemsNet`'s forward only: float32 magnitudes ``magnitude``
``[N, C, T, F]`` in, per-stem magnitude estimates ``estimates`` ``[S, N, C, T, F]`` out. The STFT, the ratio
masks, the mask extension and the inverse STFT stay in unet-sep's host code (:mod:`unet_sep.separate.stream`),
which is the same whichever backend runs the U-Nets. ``N`` and ``T`` are dynamic; ``T`` must be a multiple of
``2 ** depth`` (the TensorFlow "same" padding of every layer is the same for all such ``T``, and the exported
graph keeps it fixed), and ``C`` and ``F`` are the model's.

The model's ``config.json`` is embedded in the file's metadata (:data:`CONFIG_KEY`), so an exported file is a
model by itself: ``unet-sep separate SONG --model model.onnx`` needs nothing else. Exporting and reading need the
``onnx`` extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import torch

from unet_sep import __version__
from unet_sep.atomic import remove_stale_temporaries, write_bytes_atomic
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ConfigError, ModelConfig
from unet_sep.errors import one_line
from unet_sep.extras import import_extra
from unet_sep.model.stems import StemsNet
from unet_sep.weights.checkpoint import CheckpointError, load_model
from unet_sep.weights.download import sha256_of
from unet_sep.weights.entries import cache_dir

logger = logging.getLogger(__name__)

ONNX_OPSET = 17  # ONNX Runtime 1.12 and later run it
INPUT_NAME = "magnitude"
OUTPUT_NAME = "estimates"
CONFIG_KEY = "unet_sep.config"  # metadata: the model's config.json
FRAMES_MULTIPLE_KEY = "unet_sep.frames_multiple"  # metadata: T must be a multiple of this (2 ** depth)
EXPORT_VERSION_KEY = "unet_sep.export_version"
EXPORT_VERSION = 1  # raised when the exported graph changes, so exports cached by an older version are remade


def onnx_model_bytes(net: StemsNet, config: ModelConfig, opset: int = ONNX_OPSET) -> bytes:
    """``net`` exported to ONNX (TorchScript-based exporter) with ``config`` in its metadata, as the bytes of a
    ``.onnx`` file."""
    onnx = import_extra("onnx", "onnx", "ONNX export")
    parameter = next(net.parameters())
    example = torch.zeros(1, config.n_channels, config.segment_frames, config.frequency_bins, device=parameter.device)
    # Gradients on, so the decoders trace their ConvTranspose2d (the inference-only sub-pixel form caches weights
    # the exporter cannot follow); the module stays in eval mode (BatchNorm statistics, no dropout).
    with tempfile.TemporaryDirectory(prefix=".unet-sep-onnx-") as folder, torch.inference_mode(False), \
            torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the padding sizes, fixed for T on the stride grid
        traced = Path(folder) / "unets.onnx"
        torch.onnx.export(net.eval(), (example,), traced, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch", 2: "frames"},
                                        OUTPUT_NAME: {1: "batch", 3: "frames"}})
        model = onnx.load_model(str(traced))
    _exact_sigmoids(onnx, model.graph)
    multiple = 2 ** config.unet.depth
    model.producer_name, model.producer_version = "unet-sep", __version__
    model.doc_string = (f"unet-sep U-Nets of {config.name or 'a model'}: {INPUT_NAME} [N, {config.n_channels}, T, "
                        f"{config.frequency_bins}] -> {OUTPUT_NAME} [{len(config.stems)}, N, {config.n_channels}, T, "
                        f"{config.frequency_bins}] (stems {', '.join(config.stems)}), T a multiple of {multiple}; "
                        "the STFT, masks and inverse STFT are done outside this graph")
    metadata = {CONFIG_KEY: json.dumps(config.to_dict()), FRAMES_MULTIPLE_KEY: str(multiple),
                EXPORT_VERSION_KEY: str(EXPORT_VERSION)}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _exact_sigmoids(onnx: ModuleType, graph) -> None:
    """Every Sigmoid node of ``graph`` replaced by ``1 / (1 + exp(-x))``.

    ONNX Runtime's CPU Sigmoid is an approximation good to about 1e-8 absolute but not relative: a mask below
    about 1e-7 comes out as zero or up to twice its value. The ratio masks (``o_i ** p / sum_j o_j ** p``) turn that
    into audible differences in the bins where every stem's mask is small (about 48 dB SNR against torch on
    Spleeter's 2-stem U-Nets). Its Exp is exact to float32 rounding, and so is this form (0 below x = -88, where
    torch's sigmoid is subnormal).
    """
    helper = onnx.helper
    if not any(node.op_type == "Sigmoid" for node in graph.node):
        return
    one = "unet_sep.one"
    graph.initializer.append(helper.make_tensor(one, onnx.TensorProto.FLOAT, [], [1.0]))
    nodes = []
    for node in graph.node:
        if node.op_type != "Sigmoid":
            nodes.append(node)
            continue
        (logits,), (masks,) = node.input, node.output
        nodes += [helper.make_node("Neg", [logits], [f"{masks}.negated"]),
                  helper.make_node("Exp", [f"{masks}.negated"], [f"{masks}.exp"]),
                  helper.make_node("Add", [f"{masks}.exp", one], [f"{masks}.denominator"]),
                  helper.make_node("Reciprocal", [f"{masks}.denominator"], [masks])]
    del graph.node[:]
    graph.node.extend(nodes)


def export_onnx(net: StemsNet, config: ModelConfig, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Write ``net`` as the ONNX file ``path`` (whole or not at all); see the module's description."""
    path = Path(path)
    write_bytes_atomic(path, onnx_model_bytes(net, config, opset))
    return path


def export_model_folder(folder: str | Path, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """The model folder ``folder`` exported to the ONNX file ``path``."""
    config, net = load_model(folder)
    return export_onnx(net, config, path, opset)


def read_onnx_config(path: str | Path) -> ModelConfig:
    """The model config embedded in an ONNX file written by :func:`export_onnx`; a :class:`CheckpointError` naming
    the file when it is not one."""
    onnx = import_extra("onnx", "onnx", "reading an ONNX model")
    path = Path(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError, OSError: the file is not a readable ONNX model
        raise CheckpointError(f"{path}: not a readable ONNX file ({one_line(error)})") from None
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path}: an ONNX file without a unet-sep model config in its metadata (export models "
                              "with: unet-sep models export FOLDER --onnx OUT.onnx)")
    version = int(metadata.get(EXPORT_VERSION_KEY, "0"))
    if version > EXPORT_VERSION:
        raise CheckpointError(f"{path}: exported by a newer unet-sep (export version {version}; this one reads up to "
                              f"{EXPORT_VERSION})")
    try:
        return ModelConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    except (ConfigError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: its embedded model config: {error}") from None


def cached_onnx_export(folder: str | Path) -> Path:
    """The ONNX export of the model folder ``folder``, made on first use and kept in the cache (``onnx/`` under
    :func:`~unet_sep.weights.entries.cache_dir`), named by a digest of the folder's config and weights: a changed
    model gets a new export."""
    folder = Path(folder)
    files = "".join(sha256_of(folder / name) for name in (CONFIG_FILE, WEIGHTS_FILE))
    digest = hashlib.sha256(f"unet-sep onnx export {EXPORT_VERSION} opset {ONNX_OPSET}\n{files}".encode())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    if not path.is_file():
        remove_stale_temporaries(path.parent)  # those of exports that were killed
        logger.info("exporting the U-Nets of %s to ONNX (once): %s", folder, path)
        export_model_folder(folder, path)
    return path
