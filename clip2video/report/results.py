"""A suite's results folder: the all-rows table and plots, ``result.json``, one table per question.

``regenerate`` is ``report.tables.regenerate`` plus, for each suite, the tables its ``[[tables]]``
declare (``report.questions`` for ``kind = "rows"``, ``report.weights`` for ``kind = "weights"``)
(every table's footnote names the platforms of its records). A suite that declares no tables gets
exactly the files ``report.tables`` writes.
The declarations come from the ``tables`` argument, else from ``runs/<suite>/suite.json``'s
``settings["tables"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from clip2video.engine.records import RunRecord, SuiteInfo, read_suite_info
from clip2video.report.questions import QuestionTable, build_question_table, table_specs, write_question_table
from clip2video.report.tables import PAPER_DIR, SuiteTable, resamples_of
from clip2video.report.tables import regenerate as regenerate_tables
from clip2video.report.weights import OrderHook, build_weights_table, order_hook_from_data


def build_question_tables(
    suite_table: SuiteTable,
    info: SuiteInfo | None = None,
    *,
    tables: Sequence[Any] | None = None,
    order_hook: OrderHook | None = None,
    n_boot: int | None = None,
    seed: int = 0,
) -> list[QuestionTable]:
    """Every declared table of a suite (``tables``, else ``suite.json``'s), from the all-rows
    table's summarised groups (the same bootstrap summaries); a weights table from its row's
    similarity parts (``order_hook``: order accuracy). A table none of whose rows was recorded
    (a partial run) is left out."""
    specs = table_specs(info, tables)
    if not specs:
        return []
    records: list[RunRecord] = [r for g in suite_table.groups for r in g.records]
    n_boot = n_boot or resamples_of(records)
    notes = list(info.notes) if info is not None else []
    common = {"suite": suite_table.suite, "protocol": suite_table.protocol, "n_boot": n_boot, "notes": notes}
    out = []
    for spec in specs:
        if spec.kind == "weights":
            table = build_weights_table(spec, records, seed=seed, order_hook=order_hook, **common)
        else:
            table = build_question_table(spec, suite_table.groups, **common)
        if table is not None:  # None: none of its rows was recorded (a partial run)
            out.append(table)
    return out


def write_question_tables(
    suite_table: SuiteTable,
    out_dir: str | Path,
    *,
    runs_dir: str | Path,
    tables: Sequence[Any] | None = None,
    data_root: str | Path | None = None,
    order_hook: OrderHook | None = None,
) -> list[Path]:
    """Every declared table of the suite, in ``out_dir``. A weights table's
    order accuracy uses ``order_hook``, else the protocol's hook on the test annotations found under
    ``data_root`` (matched by the records' data fingerprint)."""
    written: list[Path] = []
    info = read_suite_info(runs_dir, suite_table.suite)
    specs = table_specs(info, tables)
    if not specs:
        return written
    if order_hook is None and any(s.kind == "weights" for s in specs):
        order_hook = order_hook_from_data([r for g in suite_table.groups for r in g.records], data_root)
    for table in build_question_tables(suite_table, info, tables=specs, order_hook=order_hook):
        written += write_question_table(table, out_dir)
    return written


def regenerate(
    runs_dir: str | Path = "runs",
    out_dir: str | Path = "results",
    suites: list[str] | None = None,
    *,
    paper_dir: str | Path = PAPER_DIR,
    plots: bool = True,
    tracker: Any = None,
    tables: Sequence[Any] | None = None,
    data_root: str | Path | None = None,
    order_hook: OrderHook | None = None,
) -> dict[str, list[Path]]:
    """``report.tables.regenerate`` plus each suite's declared tables
    (``tables``: declarations overriding ``suite.json``'s, for the suites given)."""
    extra = partial(_extra, runs_dir=runs_dir, tables=tables, data_root=data_root, order_hook=order_hook)
    return regenerate_tables(
        runs_dir, out_dir, suites, paper_dir=paper_dir, plots=plots, tracker=tracker, extra=extra
    )


def _extra(table: SuiteTable, folder: Path, **options: Any) -> list[Path]:
    return write_question_tables(table, folder, **options)


__all__ = [
    "build_question_tables",
    "regenerate",
    "write_question_tables",
]
