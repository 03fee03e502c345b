"""The default thread count of `unet-sep train`: the cores other processes leave free."""

from __future__ import annotations

from unet_sep.train.threads import free_threads


def test_default_threads_are_the_cores_other_processes_leave_free():
    """The thread count the default --threads picks from the other processes' load (in cores)."""
    assert free_threads(2, 0.0, 2) == 2 and free_threads(2, 0.2, 2) == 2  # idle, or a little background noise
    assert free_threads(2, 0.7, 2) == 1 and free_threads(2, 1.0, 2) == 1  # one core taken
    assert free_threads(2, 3.5, 2) == 1  # never fewer than one
    assert free_threads(16, 1.0, 16) == 15 and free_threads(16, 0.0, 8) == 8  # at most the cap (torchrun's share)
