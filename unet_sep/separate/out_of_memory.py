"""Running out of memory while one input is separated: that input fails with one line saying which settings need
less (:class:`SeparationMemoryError`), the file pipeline lets go of what it held, and the other inputs go on.

Where it happens decides the advice: a U-Net batch (``batch_size``), the Wiener filter with statistics over the
whole track, which holds all of a song's spectra at once however long it is (``wiener_window``, or fewer
``readers``: every input in flight holds its own), and on a GPU always ``device="cpu"``. Exact mode
(``segmentation="spleeter"`` with the filter) keeps Spleeter's whole-track statistics rather than silently switching
to a window, whose stems differ; so a song too long for the device is this error for that song, naming the window
that would fit.
"""

from __future__ import annotations

import torch

from unet_sep.config import DEFAULT_WIENER_WINDOW
from unet_sep.errors import AdvisedError
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.stream import SeparationStream

# The steps of one input's separation, as the messages name them.
STEPS = {
    "start": "preparing to separate it",
    "spectrogram": "computing its spectrogram",
    "batch": "running the U-Nets on a batch of {batch} segments",
    "synthesis": "synthesising its stems",
}


class SeparationMemoryError(AdvisedError, MemoryError):
    """One input that needed more memory than its device had: ``problem`` says where, ``advice`` lists settings that
    need less (:class:`~unet_sep.errors.AdvisedError`)."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that memory ran out: torch's (``torch.OutOfMemoryError``, which
    ``torch.cuda.OutOfMemoryError`` is), Python's, or the CPU allocator's (a RuntimeError in this torch)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return not isinstance(error, SeparationMemoryError)
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def out_of_memory(runner: NetworkRunner, step: str, engine: SeparationStream | None = None,
                  in_flight: int = 1) -> SeparationMemoryError:
    """The error of an input whose ``step`` (a key of :data:`STEPS`) ran out of memory on ``runner``'s device;
    ``engine``, the input's, says how long it is, ``in_flight`` how many inputs were being separated at once."""
    device, settings = runner.device, runner.settings
    where = "the CPU" if device.type == "cpu" else f"the GPU ({device})" if device.type == "cuda" else str(device)
    problem = f"{where} ran out of memory {STEPS[step].format(batch=settings.batch_size)}"
    whole_track = settings.wiener.active and settings.wiener.block is None
    if whole_track and step != "batch":
        length = "" if engine is None else f" ({engine.received / runner.sample_rate / 60:.1f} min)"
        problem += f", with the Wiener filter's statistics over the whole track{length}"
    advice: list[tuple[str, object]] = []
    if whole_track and step != "batch":
        advice.append(("wiener_window", DEFAULT_WIENER_WINDOW))
        if in_flight > 1:  # each input in flight holds its whole track until it ends
            advice.append(("readers", in_flight // 2))
    elif settings.batch_size > 1:
        advice.append(("batch_size", settings.batch_size // 2))
    if device.type != "cpu":
        advice.append(("device", "cpu"))
    return SeparationMemoryError(problem, advice)


def release_cached(device: torch.device) -> None:
    """Give the memory the caching allocator keeps back to the GPU (other processes may share it)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
