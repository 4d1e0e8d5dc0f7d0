"""The pipeline: check before work -> rows -> tables, in one call, for every caller.

``clip2video ablation``, ``clip2video eval``, ``clip2video drift --rerun``, notebooks and scripts
all run a suite through :func:`run` (or :func:`run_suite`, its keyword form)::

    from clip2video.pipeline import RunOptions, run

    result = run(RunOptions(suite="smoke", runs_dir="runs", results_dir="results", tracking=False))
    print(result.summary())

:func:`check` is the check before work alone: it writes nothing and returns what it resolved (the
suite, the data and its splits, the row plan), which :func:`run` hands to the runner so that
nothing is loaded twice. This module sits between the command line and the experiments and report
layers: it may import both; the verbs only parse their flags, build a :class:`RunOptions` and
print.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clip2video.experiments import preflight
from clip2video.experiments.options import RunOptions
from clip2video.experiments.preflight import Checked, CheckFailed
from clip2video.experiments.runner import SuiteResult, run_checked


def check(options: RunOptions) -> Checked:
    """The check before work: every problem of the run, in one :class:`CheckFailed`, or what the
    check resolved (suite, data, splits, row plan). Writes nothing."""
    return preflight.check(options)


def run(options: RunOptions, checked: Checked | None = None) -> SuiteResult:
    """Check (unless ``checked`` is given), run every row, then write the suite's tables and plots
    into ``options.results_dir`` (none when it is None)."""
    from clip2video.engine import distributed as ddp

    start = time.perf_counter()
    checked = checked if checked is not None else check(options)
    result = run_checked(checked)
    if options.results_dir is not None and ddp.rank_and_world()[0] == 0:
        from clip2video.tracking import results_tracker

        tracker = results_tracker(options.tracking_uri, options.tracking)  # the suite run gets the results
        result.results_files = write_tables(options.runs_dir, options.results_dir, result.suite.name, tracker)
    result.elapsed_s = time.perf_counter() - start
    return result


def run_suite(suite: Any, **options: Any) -> SuiteResult:
    """:func:`run` with the options as keywords (the fields of :class:`RunOptions`), e.g.
    ``run_suite("smoke", runs_dir="runs", results_dir="results", tracking=False)``."""
    return run(RunOptions(suite=suite, **options))


def write_tables(
    runs_dir: str | Path, results_dir: str | Path, suite: str, tracker: Any = None
) -> list[Path]:
    """The suite's tables, plots and ``result.json`` from its records (``report.tables.regenerate``);
    ``tracker``: the suite's MLflow run gets them too."""
    from clip2video.report.tables import regenerate

    return regenerate(runs_dir, results_dir, [suite], tracker=tracker).get(suite, [])


__all__ = ["CheckFailed", "Checked", "RunOptions", "SuiteResult", "check", "run", "run_suite", "write_tables"]
