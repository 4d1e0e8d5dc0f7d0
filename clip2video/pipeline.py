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
        result.results_files = write_tables(
            options.runs_dir, options.results_dir, result.suite.name, tracker, data_root=options.data_root
        )
        if options.reference is not None and _has_reference(options.reference, result.suite.name):
            from clip2video.report.verdict import verdict_after_tables

            result.verdict = verdict_after_tables(
                options.results_dir, result.suite.name, options.reference, echo=_quiet
            )
    result.elapsed_s = time.perf_counter() - start
    return result


def run_suite(suite: Any, **options: Any) -> SuiteResult:
    """:func:`run` with the options as keywords (the fields of :class:`RunOptions`), e.g.
    ``run_suite("smoke", runs_dir="runs", results_dir="results", tracking=False)``."""
    return run(RunOptions(suite=suite, **options))


def write_tables(
    runs_dir: str | Path,
    results_dir: str | Path,
    suite: str,
    tracker: Any = None,
    *,
    data_root: str | Path | None = None,
) -> list[Path]:
    """The suite's tables (the all-rows table and one per ``[[tables]]`` question), plots and
    ``result.json`` from its records (``report.results.regenerate``); ``tracker``: the suite's
    MLflow run gets them too; ``data_root``: where a weights table finds the protocol's
    annotations for its order accuracy."""
    from clip2video.report.results import regenerate

    return regenerate(runs_dir, results_dir, [suite], tracker=tracker, data_root=data_root).get(suite, [])


def _quiet(_line: str) -> None:
    """The verb prints the verdict after its summary."""


def _has_reference(reference: Path, suite: str) -> bool:
    """Whether ``reference`` holds a reference for ``suite`` (``<suite>/`` or ``<suite>-avx2/``)."""
    return any((Path(reference) / name).is_dir() for name in (suite, f"{suite}-avx2"))


__all__ = ["CheckFailed", "Checked", "RunOptions", "SuiteResult", "check", "run", "run_suite", "write_tables"]
