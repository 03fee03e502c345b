"""A model's U-Nets as one ONNX file, for ONNX Runtime (:mod:`unet_sep.separate.onnx_network` runs it).

The file holds :class:`~unet_sep.model.stems.StemsNet`'s forward only: float32 magnitudes ``magnitude``
``[N, C, T, F]`` in, per-stem magnitude estimates ``estimates`` ``[S, N, C, T, F]`` out. The STFT, the ratio
masks, the mask extension and the inverse STFT stay in unet-sep's host code (:mod:`unet_sep.separate.stream`),
which is the same whichever backend runs the U-Nets. ``N`` and ``T`` are dynamic; ``T`` must be a multiple of
``2 ** depth`` (the TensorFlow "same" padding of every layer is the same for all such ``T``, and the exported
graph keeps it fixed), and ``C`` and ``F`` are the model's.

The model's ``config.json`` is embedded in the file's metadata (:data:`CONFIG_KEY`), so an exported file is a
model by itself: ``unet-sep separate SONG --model model.onnx`` needs nothing else. So is a digest of every tensor
the graph holds (:data:`GRAPH_DIGEST_KEY`, :func:`graph_digest`), which reading checks, with the config's stems,
channels and bins against the graph's declared input and output shapes: a damaged or mismatched file is a
:class:`~unet_sep.weights.checkpoint.CheckpointError` naming it, before any input is read. Exporting and reading
need the ``onnx`` extra.
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
from unet_sep.weights.checkpoint import CheckpointError, load_model, verify_weights
from unet_sep.weights.download import sha256_of
from unet_sep.weights.entries import cache_dir
from unet_sep.weights.verified import remembered_digest

logger = logging.getLogger(__name__)

ONNX_OPSET = 17  # ONNX Runtime 1.12 and later run it
INPUT_NAME = "magnitude"
OUTPUT_NAME = "estimates"
CONFIG_KEY = "unet_sep.config"  # metadata: the model's config.json
FRAMES_MULTIPLE_KEY = "unet_sep.frames_multiple"  # metadata: T must be a multiple of this (2 ** depth)
EXPORT_VERSION_KEY = "unet_sep.export_version"
GRAPH_DIGEST_KEY = "unet_sep.graph_sha256"  # metadata: graph_digest() of the exported graph
EXPORT_VERSION = 1  # raised when the exported graph changes, so exports cached by an older version are remade


def onnx_model_bytes(net: StemsNet, config: ModelConfig, opset: int = ONNX_OPSET) -> bytes:
    """``net`` exported to ONNX (TorchScript-based exporter) with ``config`` in its metadata, as the bytes of a
    ``.onnx`` file."""
    onnx = import_extra("onnx", "onnx", "ONNX export")
    parameter = next(net.parameters())
    example = torch.zeros(1, config.n_channels, config.segment_frames, config.frequency_bins, device=parameter.device)
    # The training module itself is exported: its decoders are plain ConvTranspose2d (the inference-only sub-pixel
    # form is model/subpixel.py's, built by the runner). Gradients on, so nothing takes an inference-only path;
    # the module stays in eval mode (BatchNorm statistics, no dropout).
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
                EXPORT_VERSION_KEY: str(EXPORT_VERSION), GRAPH_DIGEST_KEY: graph_digest(onnx, model.graph)}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def graph_digest(onnx: ModuleType, graph) -> str:
    """The sha256 of every tensor the ONNX ``graph`` holds (its initializers, the weights, and the tensors of its
    Constant nodes), each by name, type, shape and values, in graph order: what a flipped byte in the weights
    changes, and protobuf's choice of encoding does not."""
    digest = hashlib.sha256()
    tensors = [*graph.initializer, *(attribute.t for node in graph.node for attribute in node.attribute
                                     if attribute.type == onnx.AttributeProto.TENSOR)]
    for tensor in tensors:
        values = onnx.numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}\0{tensor.data_type}\0{list(tensor.dims)}\0".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def io_shape_mismatch(inputs: list, outputs: list, config: ModelConfig) -> str | None:
    """How the U-Nets' declared input shape ``inputs`` (``[N, C, T, F]``) and output shape ``outputs``
    (``[S, N, C, T, F]``) differ from what ``config`` says (stems, channels, bins), or None when they agree; a
    dimension that is not a whole number (a named, dynamic one) agrees with anything."""
    if len(inputs) != 4 or len(outputs) != 5:
        return (f"its U-Nets take a rank-{len(inputs)} input and give a rank-{len(outputs)} output; unet-sep's "
                "take [N, C, T, F] and give [S, N, C, T, F]")
    expected = (("stems", outputs[0], len(config.stems)), ("channels", inputs[1], config.n_channels),
                ("channels", outputs[2], config.n_channels), ("frequency bins", inputs[3], config.frequency_bins),
                ("frequency bins", outputs[4], config.frequency_bins))
    for what, found, wanted in expected:
        if isinstance(found, int) and found != wanted:
            return f"its config says {wanted} {what}, its U-Nets have {found}"
    return None


def _graph_dims(value_info) -> list:
    """The declared shape of an ONNX graph input or output: ints where fixed, names where dynamic."""
    return [dim.dim_value if dim.HasField("dim_value") else dim.dim_param
            for dim in value_info.type.tensor_type.shape.dim]


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
    the file when it is not one, when its tensors are not those it was exported with (the digest in its metadata),
    or when its config does not fit its graph. A file exported before the digest was recorded loads unverified,
    with a warning."""
    config, verified = _read_export(Path(path))
    if not verified:
        logger.warning("%s records no digest of its weights (exported before unet-sep recorded one): loaded "
                       "unverified; export it again to add one", path)
    return config


def _read_export(path: Path) -> tuple[ModelConfig, bool]:
    """:func:`read_onnx_config`'s checks: the config, and whether a digest was recorded (and matched)."""
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
        config = ModelConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    except (ConfigError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: its embedded model config: {error}") from None
    recorded = metadata.get(GRAPH_DIGEST_KEY)
    if recorded is not None:
        actual = remembered_digest(path, "onnx-graph", lambda _: graph_digest(onnx, model.graph))
        if actual != recorded:
            raise CheckpointError(f"{path}: corrupted or changed: the digest of its weights is {actual}, but its "
                                  f"metadata records {recorded}")
    ports = {port.name: _graph_dims(port) for port in [*model.graph.input, *model.graph.output]}
    if INPUT_NAME not in ports or OUTPUT_NAME not in ports:
        raise CheckpointError(f"{path}: not a unet-sep export (its graph has no {INPUT_NAME!r} input or "
                              f"{OUTPUT_NAME!r} output)")
    mismatch = io_shape_mismatch(ports[INPUT_NAME], ports[OUTPUT_NAME], config)
    multiple = metadata.get(FRAMES_MULTIPLE_KEY, str(2 ** config.unet.depth))
    if mismatch is None and multiple != str(2 ** config.unet.depth):
        mismatch = (f"its U-Nets take frames in multiples of {multiple}, its config's {config.unet.depth} levels in "
                    f"multiples of {2 ** config.unet.depth}")
    if mismatch:
        raise CheckpointError(f"{path}: does not fit its embedded config: {mismatch}")
    return config, recorded is not None


def cached_onnx_export(folder: str | Path) -> Path:
    """The ONNX export of the model folder ``folder``, made on first use and kept in the cache (``onnx/`` under
    :func:`~unet_sep.weights.entries.cache_dir`), named by a digest of the folder's config and weights: a changed
    model gets a new export. The folder's weights are verified (:func:`~unet_sep.weights.checkpoint.verify_weights`)
    and so is a cached export (:func:`read_onnx_config`'s checks): one that fails them, or that records no digest
    (made by an earlier unet-sep), is exported again."""
    folder = Path(folder)
    config = ModelConfig.load(folder / CONFIG_FILE)
    verify_weights(folder / WEIGHTS_FILE, config, folder / CONFIG_FILE)
    files = sha256_of(folder / CONFIG_FILE) + (config.weights_sha256 or sha256_of(folder / WEIGHTS_FILE))
    digest = hashlib.sha256(f"unet-sep onnx export {EXPORT_VERSION} opset {ONNX_OPSET}\n{files}".encode())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    if path.is_file():
        try:
            if _read_export(path)[1]:
                return path
            logger.info("%s: an export without a digest of its weights: exporting it again", path)
        except CheckpointError as error:
            logger.warning("%s; exporting it again", error)
    remove_stale_temporaries(path.parent)  # those of exports that were killed
    logger.info("exporting the U-Nets of %s to ONNX (once): %s", folder, path)
    return export_model_folder(folder, path)
