"""What a training run ends with: a :class:`TrainResult`, or an error whose message is meant for the user."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TrainingError(Exception):
    """A run that cannot start or continue; the message is meant for the user."""


class RecipeChangedError(TrainingError):
    """A resume with a recipe that differs from the run's own in keys that change the training."""


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run did: ``steps`` is the run's step count, ``start_step`` the step this
    invocation started from (the checkpoint's, when resumed)."""

    out: Path
    steps: int
    stopped_early: bool
    best_score: float | None
    best_step: int | None
    final_loss: float | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    start_step: int = 0
    complete: str = ""  # why a resumed run had nothing left to do: "already finished its 60 steps", ...

    @property
    def trained_steps(self) -> int:
        """Steps taken by this invocation (0: the resumed run was already complete)."""
        return self.steps - self.start_step

    def summary(self) -> str:
        """One line: what this invocation trained (and the run's total when resumed), the last loss, the best
        score."""
        if self.complete:
            return f"nothing to do: the run {self.out} {self.complete}"
        if self.best_score is None:
            best = "no validation data"
        else:
            best = f"best validation SDR {self.best_score:.2f} dB at step {self.best_step}"
        loss = "-" if self.final_loss is None else f"{self.final_loss:.4f}"
        stop = " and stopped early" if self.stopped_early else ""
        if not self.start_step:
            return f"trained {self.steps} steps in {self.seconds:.0f} s{stop}; last loss {loss}; {best}"
        n = self.trained_steps
        span = f"step {self.steps} (1 step)" if n == 1 else f"steps {self.start_step + 1}-{self.steps} ({n} steps)"
        return (f"trained {span} in {self.seconds:.0f} s{stop}; the run has {self.steps} steps; last loss {loss}; "
                f"{best}")
