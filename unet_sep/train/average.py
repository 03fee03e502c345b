"""Stochastic weight averaging: a uniform running average of a network's weights taken every so many steps.

The training loop keeps one when ``train.average_from`` is set (see ``TrainConfig``); ``average_files`` builds
the same average afterwards from saved weight files, with the same arithmetic, so the two agree bit for bit.
Batch-norm running statistics are averaged like the weights (as ``torch.optim.swa_utils.AveragedModel`` does with
``use_buffers=True``); integer buffers such as ``num_batches_tracked`` take the newest value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


class WeightAverage:
    """The running mean of the state dicts passed to ``update``."""

    def __init__(self) -> None:
        self.count = 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Add one more set of weights to the mean: ``mean += (weights - mean) / count``."""
        self.count += 1
        if self.state is None:
            self.state = {key: value.detach().clone() for key, value in state_dict.items()}
            return
        for key, value in state_dict.items():
            mean = self.state[key]
            if mean.is_floating_point():
                mean.add_((value.detach() - mean) / self.count)
            else:
                mean.copy_(value)

    def load(self, state: dict[str, torch.Tensor], count: int) -> None:
        """Continue an average saved with ``state`` after ``count`` updates (resuming a run)."""
        if count < 1:
            raise ValueError("a saved weight average needs count >= 1")
        self.state = {key: value.clone() for key, value in state.items()}
        self.count = count


def with_average(net: ModuleT, average: WeightAverage | None) -> ModuleT:
    """``net`` itself, or a copy of it holding the weight average once the average has begun."""
    if average is None or average.state is None:
        return net
    averaged = copy.deepcopy(net)
    averaged.load_state_dict(average.state)
    return averaged


def average_files(paths: list[str | Path]) -> WeightAverage:
    """The uniform average of the weight files ``paths`` (safetensors state dicts), in the order given."""
    if not paths:
        raise ValueError("no weight files to average")
    average = WeightAverage()
    for path in paths:
        average.update(load_file(str(path)))
    return average
