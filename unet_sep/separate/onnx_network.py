"""The U-Nets run by ONNX Runtime: the network of a :class:`~unet_sep.separate.runner.NetworkRunner` whose
backend is ``"onnxruntime"``.

The runner calls it as it calls the torch module, on batches ``[N, C, T, F]`` -> ``[S, N, C, T, F]``; everything
around it (STFT, masks, inverse STFT, segments, batching) is the same code for both backends. It runs an ONNX file
exported by :mod:`unet_sep.weights.onnx_export` (or the bytes of one) in an ``onnxruntime.InferenceSession``:
the CUDA execution provider where the runner's device is CUDA and this onnxruntime has it, otherwise the CPU's,
with as many threads as torch uses (``--threads``). The exported U-Nets compute in float32, so the runner refuses
the settings that change the torch module's arithmetic or form (``precision``, ``compile``, ``optimize``).
The session's input and output shapes are checked against the model's config when it is made, so a file whose
U-Nets do not fit its config is one model error, not a failure of every input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import torch

from unet_sep.config import ModelConfig
from unet_sep.extras import import_extra
from unet_sep.weights.checkpoint import CheckpointError
from unet_sep.weights.onnx_export import FRAMES_MULTIPLE_KEY, INPUT_NAME, OUTPUT_NAME, io_shape_mismatch

logger = logging.getLogger(__name__)


def require_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or :class:`~unet_sep.extras.MissingExtraError` naming the ``onnx`` extra."""
    return import_extra("onnxruntime", "onnx", "the onnxruntime backend")


def _providers(ort: ModuleType, device: torch.device) -> list:
    """ONNX Runtime's execution providers for the runner's ``device``, best first."""
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        logger.warning("this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu): the U-Nets "
                       "run on the CPU, the rest on %s", device)
    elif device.type != "cpu":
        logger.info("onnxruntime runs the U-Nets on the CPU, the rest runs on %s", device)
    return ["CPUExecutionProvider"]


class OnnxNetwork:
    """An exported model's U-Nets in an ONNX Runtime session, called on torch batches on ``device``.

    ``model`` is the path of an exported ``.onnx`` file or its bytes; ``threads`` defaults to torch's number.
    With ``config``, a :class:`~unet_sep.weights.checkpoint.CheckpointError` naming the file when its U-Nets'
    input and output shapes or frame multiple do not fit it.
    """

    def __init__(self, model: str | Path | bytes, device: torch.device, threads: int | None = None,
                 config: ModelConfig | None = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Between two batches torch computes STFTs and masks on the same cores: idle threads sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.device = device
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=_providers(ort, device))
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.frames_multiple = int(metadata.get(FRAMES_MULTIPLE_KEY, "1"))
        if config is not None:
            self._check(config, "the exported U-Nets" if isinstance(model, bytes) else str(model))

    def _check(self, config: ModelConfig, where: str) -> None:
        """A :class:`CheckpointError` for ``where`` unless the session's U-Nets fit ``config``."""
        ports = {port.name: list(port.shape) for port in [*self.session.get_inputs(), *self.session.get_outputs()]}
        if INPUT_NAME not in ports or OUTPUT_NAME not in ports:
            raise CheckpointError(f"{where}: not a unet-sep export (no {INPUT_NAME!r} input or {OUTPUT_NAME!r} "
                                  "output)")
        mismatch = io_shape_mismatch(ports[INPUT_NAME], ports[OUTPUT_NAME], config)
        if mismatch is None and config.segment_frames % self.frames_multiple:
            mismatch = (f"its U-Nets take frames in multiples of {self.frames_multiple}, not the config's "
                        f"{config.segment_frames}-frame segments")
        if mismatch:
            raise CheckpointError(f"{where}: does not fit the model's config: {mismatch}")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Magnitudes ``[N, C, T, F]`` -> estimates ``[S, N, C, T, F]`` (float32, on ``device``); ``T`` a multiple of
        ``2 ** depth``."""
        if batch.shape[-2] % self.frames_multiple:
            raise ValueError(f"the exported U-Nets take T frames in multiples of {self.frames_multiple}, got "
                             f"{batch.shape[-2]}")
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        (estimates,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(estimates).to(self.device)
