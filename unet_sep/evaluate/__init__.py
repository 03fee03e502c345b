"""Evaluation of separators as the field reports it: museval BSSEval v4 with SiSEC18 medians, MIR-1K's GNSDR.

- :mod:`~unet_sep.evaluate.plan`: :func:`~unet_sep.evaluate.plan.plan_evaluation` checks the arguments, loads
  the models and lists the tracks (:mod:`~unet_sep.evaluate.selection` turns the data options into data
  settings, :mod:`~unet_sep.evaluate.methods` makes the compared methods).
- :mod:`~unet_sep.evaluate.evaluation`: :class:`~unet_sep.evaluate.evaluation.Evaluation` separates and scores
  track by track, resuming from the per-track JSON of earlier runs.
- :mod:`~unet_sep.evaluate.score`: museval scoring, the baselines and the aggregates.
- :mod:`~unet_sep.evaluate.report`: the summary table, ``summary.csv``, ``tracks.csv`` and ``sdr_boxplot.png``.

Scoring needs the ``eval`` extra (museval, musdb, matplotlib), imported when first used.
"""
