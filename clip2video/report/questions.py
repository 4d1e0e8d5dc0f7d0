"""One table per research question: a suite's ``[[tables]]`` declarations, rendered.

A suite may declare tables (``suite.json``'s ``settings["tables"]``, as the suite file says them)::

    [[tables]]
    name = "components"                   # results/<suite>/components.{md,tex,csv}
    title = "Does each temporal block help?"
    rows = ["meanp", "tdb", "tab", "clip2video"]
    reference = "meanp"
    compare = [["clip2video", "tdb"]]     # extra paired comparisons: clip2video minus tdb

    [[tables]]
    name = "weights"
    kind = "weights"                       # report/weights.py: from one row's stored similarity parts
    row = "clip2video"
    weights = [0.0, 0.25, 0.5, 0.75, 1.0]
    reference = 0.5

Each table holds the rows it names (a row's seeds grouped by its row name), each row's paired
two-level bootstrap difference from the table's ``reference`` row plus the ``compare`` pairs, with
p-values Holm-adjusted within the table (the family is that table's comparisons, every metric
column and order accuracy), order accuracy on every row that recorded it, and its minimum
detectable t2v R@1 difference at 80% power: each comparison's own (from that comparison's paired
standard error) and the table's (the largest of them). The statistics are the all-rows table's
(``report.tables``): the same summaries, ``_tests`` and cell formats.

Files per table: ``<name>.md`` and ``<name>.tex`` (the title as caption) and ``<name>.csv`` (tidy
numbers: one line per row and seed, a ``mean`` line per row and metric with its interval, and a
``comparison`` line per comparison and metric with delta, interval, p, Holm's p, significance and
MDE). ``report.results`` writes them beside the all-rows table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clip2video.engine.records import SuiteInfo
from clip2video.fileio import atomic_write_text
from clip2video.metrics import metric_label
from clip2video.metrics.bootstrap import PairedDiff, minimum_detectable_difference
from clip2video.report.groups import ORDER_KEY, ModelGroup
from clip2video.report.platforms import platform_note
from clip2video.report.tables import (
    ALPHA,
    POWER,
    SIG_MARK,
    LatexTable,
    TableError,
    _coverage_notes,
    _frame,
    _row_mark_notes,
    _significance_rows,
    _Tests,
    _tests,
    fmt,
    latex_document,
    row_cells,
    table_keys,
)
from clip2video.settings import TableDecl, table_decl


def table_specs(info: SuiteInfo | None, tables: Sequence[Any] | None = None) -> list[TableDecl]:
    """The suite's declared tables: ``tables`` when given, else ``suite.json``'s
    ``settings["tables"]`` (empty when the suite declares none)."""
    source = "tables"
    if tables is None:
        settings = (info.extra.get("settings") if info is not None else None) or {}
        tables = settings.get("tables") if isinstance(settings, Mapping) else None
        source = f"runs/{info.suite if info else '?'}/suite.json: settings.tables"
    specs = [table_decl(entry, i, source) for i, entry in enumerate(tables or ())]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TableError(f"{source}: the table name {dupes[0]!r} is used twice")
    return specs


@dataclass
class Comparison:
    """``row`` minus ``against`` over the same resamples, with Holm's p within the table."""

    key: str
    row: str
    against: str
    diffs: dict[str, PairedDiff]
    adjusted: dict[str, float]

    def significant(self, metric: str) -> bool:
        """Holm-adjusted p below alpha (and a nonzero difference)."""
        d, p = self.diffs.get(metric), self.adjusted.get(metric, np.nan)
        return bool(d is not None and d.delta != 0.0 and np.isfinite(p) and p < ALPHA)

    def mde(self, metric: str) -> float:
        """Minimum detectable difference of ``metric`` at 80% power, from this comparison's paired
        standard error (two-sided alpha 0.05, before Holm)."""
        d = self.diffs.get(metric)
        if d is None or not np.isfinite(d.se):
            return float("nan")
        return minimum_detectable_difference(d.se, alpha=ALPHA, power=POWER)


@dataclass
class QuestionTable:
    """One declared table: its rows' summaries, comparisons, display frames and footnotes."""

    spec: TableDecl
    suite: str
    protocol: str
    groups: list[ModelGroup]
    reference: ModelGroup | None
    comparisons: list[Comparison]
    keys: tuple[str, ...]
    main: pd.DataFrame
    significance: pd.DataFrame
    values: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)

    @property
    def mde_key(self) -> str:
        """The metric the table's power is stated for: t2v R@1 (the first t2v recall)."""
        return next((k for k in self.keys if k.startswith("t2v_R")), "t2v_R1")

    def mde(self, metric: str | None = None) -> float:
        """The table's minimum detectable difference of ``metric`` (default t2v R@1): the largest of
        its comparisons' (NaN without comparisons)."""
        values = [c.mde(metric or self.mde_key) for c in self.comparisons]
        values = [v for v in values if np.isfinite(v)]
        return float(max(values)) if values else float("nan")


def _rows_by_name(groups: Sequence[ModelGroup]) -> dict[str, ModelGroup]:
    """Plain groups by row name (``ModelGroup.model`` holds the row name the records were grouped by)."""
    return {g.model: g for g in groups if not g.postprocess}


def build_question_table(
    spec: TableDecl,
    groups: Sequence[ModelGroup],
    *,
    suite: str,
    protocol: str,
    n_boot: int,
    notes: Sequence[str] = (),
) -> QuestionTable | None:
    """A ``kind = "rows"`` table from the suite's summarised groups (``SuiteTable.groups``): the rows
    it names that were recorded (a partial run, e.g. ``--models``, leaves the others out, and the
    footnotes name them); None when none of them was recorded."""
    by_name = _rows_by_name(groups)
    missing = [r for r in spec.rows if r not in by_name]
    chosen = [by_name[r] for r in spec.rows if r in by_name]
    if not chosen:
        return None
    own = []
    if missing:
        own.append(
            f"Rows of this table the run did not record (left out, with their comparisons): {', '.join(missing)}; "
            f"rerun the suite with them for the whole table."
        )
    return assemble(spec, chosen, str(spec.reference), spec.compare, suite=suite, protocol=protocol,
                    n_boot=n_boot, notes=[*own, *notes])  # fmt: skip


def assemble(
    spec: TableDecl,
    groups: list[ModelGroup],
    reference: str,
    compare: Sequence[tuple[str, str]],
    *,
    suite: str,
    protocol: str,
    n_boot: int,
    notes: Sequence[str] = (),
) -> QuestionTable:
    """The table of summarised ``groups`` (in display order): tests against the row named
    ``reference`` plus ``compare``, one Holm family, frames, values and footnotes."""
    tests = _tests(groups, reference, compare)
    comparisons = [
        Comparison(key, a.label, b.label, tests.diffs[key], tests.adjusted.get(key, {}))
        for key, (a, b) in tests.pairs.items()
    ]
    keys = table_keys(groups)
    table = QuestionTable(
        spec=spec,
        suite=suite,
        protocol=protocol,
        groups=groups,
        reference=tests.reference,
        comparisons=comparisons,
        keys=keys,
        main=_frame(_main_rows(groups, tests, keys)),
        significance=pd.DataFrame(),
        values=pd.DataFrame(),
    )
    table.significance = _significance_frame(table, tests)
    table.values = _values(table)
    table.footnotes = _footnotes(table, tests, n_boot, notes)
    return table


def _main_rows(groups: list[ModelGroup], tests: _Tests, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    has_order = any(g.has(ORDER_KEY) for g in groups)
    return [
        {
            **row_cells(g, tests, keys, has_order=has_order),
            "note": "reference" if tests.reference is g else "",
        }
        for g in groups
    ]


def _significance_frame(table: QuestionTable, tests: _Tests) -> pd.DataFrame:
    """One line per comparison (``a - b``): each metric's paired difference with its p and Holm's p,
    and the comparison's minimum detectable t2v R@1 difference."""
    rows = _significance_rows(tests)
    mde_column = f"MDE {metric_label(table.mde_key)}"
    by_key = {c.key: c for c in table.comparisons}
    for row in rows:
        comparison = by_key[row["row"]]
        if comparison.key == comparison.row:  # a row against the reference: say so
            row["row"] = f"{comparison.row} - {comparison.against}"
        row[mde_column] = fmt(comparison.mde(table.mde_key))
    frame = _frame(rows)
    return frame.rename_axis("comparison") if not frame.empty else frame


def _values(table: QuestionTable) -> pd.DataFrame:
    """Tidy numbers: ``seed`` lines (per row, seed and metric), ``mean`` lines (mean, std, interval,
    standard error) and ``comparison`` lines (delta, interval, p, Holm's p, significance, MDE)."""
    lines: list[dict[str, Any]] = []
    wanted = [*table.keys, ORDER_KEY]
    for group in table.groups:
        s = group.summary
        assert s is not None
        for key in (k for k in wanted if k in s.keys):
            for i, rec in enumerate(group.records):
                lines.append(
                    {"line": "seed", "row": group.label, "seed": rec.seed, "record": rec.name, "metric": key,
                     "value": s.per_seed[i, s.keys.index(key)]}
                )  # fmt: skip
            lo, hi = s.interval(key)
            lines.append(
                {"line": "mean", "row": group.label, "seed": "mean", "metric": key, "value": s.point(key),
                 "std": s.std(key), "lo": lo, "hi": hi, "se": s.se(key), "n_seeds": s.n_seeds}
            )  # fmt: skip
    for c in table.comparisons:
        for key in (k for k in wanted if k in c.diffs):
            d = c.diffs[key]
            lines.append(
                {"line": "comparison", "row": c.row, "against": c.against, "metric": key, "value": d.delta,
                 "lo": d.lo, "hi": d.hi, "se": d.se, "p": d.p, "p_holm": c.adjusted.get(key, np.nan),
                 "significant": c.significant(key), "mde": c.mde(key)}
            )  # fmt: skip
    columns = ["table", "line", "row", "against", "seed", "record", "metric", "value", "std", "lo", "hi",
               "se", "n_seeds", "p", "p_holm", "significant", "mde"]  # fmt: skip
    return pd.DataFrame(lines).assign(table=table.spec.name).reindex(columns=columns)


def _footnotes(table: QuestionTable, tests: _Tests, n_boot: int, notes: Sequence[str]) -> list[str]:
    groups = table.groups
    base = groups[0].summary
    assert base is not None
    seeds = "/".join(str(n) for n in sorted({g.summary.n_seeds for g in groups if g.summary is not None}))
    out = _row_mark_notes(groups)
    out.append(
        f"Cells: mean ± sample std over {seeds} seed(s) (no ± part for a row run once) [95% two-level bootstrap interval: "
        f"seeds resampled with replacement and test videos resampled as clusters with all their captions, "
        f"{n_boot} resamples]. Queries: {base.resampling.num_captions} text-to-video (captions) in "
        f"{base.resampling.num_videos} clusters (videos), {base.resampling.num_videos} video-to-text."
    )
    ref = table.reference
    if ref is None:
        out.append(f"No `{table.spec.reference}` row: no comparisons against it.")
    extra = [c.key for c in table.comparisons if ref is None or c.against != ref.label]
    if table.comparisons:
        against = f"each row against `{ref.label}`" if ref is not None else ""
        pairs = f"the pair(s) {', '.join(f'`{k}`' for k in extra)}" if extra else ""
        family = " and ".join(x for x in (against, pairs) if x)
        out.append(
            f"{SIG_MARK} on a cell: differs from `{ref.label if ref else table.spec.reference}`; the comparisons "
            f"section lists {family} (row minus row): paired two-level bootstrap over the same resamples, two-sided "
            f"p-values adjusted by Holm's method within this table ({tests.family} tests: every metric column "
            f"and order accuracy of every comparison); significant when the adjusted p < {ALPHA:g}."
        )
        key = table.mde_key
        each = "; ".join(f"{c.key if c.key != c.row else f'{c.row} - {c.against}'} {fmt(c.mde(key))}"
                         for c in table.comparisons)  # fmt: skip
        out.append(
            f"Minimum detectable {metric_label(key)} difference at {POWER:.0%} power (two-sided alpha {ALPHA:g}, "
            f"before Holm) of this table: {fmt(table.mde(key))} points, the largest of its comparisons' ({each}; "
            f"each from that comparison's paired bootstrap standard error, x {minimum_detectable_difference(1.0):.2f})."
        )
    if tests.skipped:
        out.append(f"Not tested (different query sets or seed counts): {', '.join(tests.skipped)}.")
    if any(g.has(ORDER_KEY) for g in groups) and not all(g.has(ORDER_KEY) for g in groups):
        lacking = [g.label for g in groups if not g.has(ORDER_KEY)]
        out.append(f"order acc: n/a where the row recorded none ({', '.join(lacking)}).")
    out += _coverage_notes(groups, None)
    out.append(platform_note(groups))
    out.extend(notes)
    return out


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _markdown(table: QuestionTable) -> str:
    spec = table.spec
    rows = ", ".join(f"`{g.label}`" for g in table.groups)
    md = [
        f"# {spec.caption}",
        "",
        f"Suite `{table.suite}` (protocol `{table.protocol}`), table `{spec.name}`: rows {rows}; "
        f"reference `{table.reference.label if table.reference else spec.reference}`; "
        f"minimum detectable {metric_label(table.mde_key)} difference {fmt(table.mde())} points.",
        "",
        table.main.to_markdown(),
        "",
    ]
    if not table.significance.empty:
        md += [
            "## Paired two-level bootstrap (row minus row; Holm-adjusted within this table)",
            "",
            table.significance.to_markdown(),
            "",
        ]
    md += ["Notes:", ""] + [f"- {note}" for note in table.footnotes] + [""]
    return "\n".join(md)


_SUBJECTS = {"t2v": "text-to-video retrieval", "v2t": "video-to-text retrieval"}


def latex_items(table: QuestionTable) -> list[LatexTable]:
    """The table's LaTeX floats (``report.tables.latex_float``): each direction's metrics apart and
    the other columns (so that each fits a column of a two-column paper), then the comparisons the
    same way; the notes under the first float."""
    spec = table.spec
    title = spec.caption[:1].upper() + spec.caption[1:]
    where = f"on the `{table.protocol}` protocol (suite `{table.suite}`, table `{spec.name}`)"
    seeds = sorted({g.summary.n_seeds for g in table.groups if g.summary is not None}) or [1]
    spread = "one run per row" if seeds == [1] else f"mean ± std over {'/'.join(map(str, seeds))} seeds"
    ref = table.reference.label if table.reference is not None else spec.reference
    sig = f"{SIG_MARK} differs from `{ref}` after Holm's adjustment within this table"
    items: list[LatexTable] = []
    for prefix, frame in (("", table.main), ("paired-", table.significance)):
        if frame.empty:
            continue
        for direction in ("t2v", "v2t", "other"):
            cols = [
                c
                for c in frame.columns
                if str(c).startswith(direction)
                or (direction == "other" and not str(c).startswith(("t2v", "v2t")))
            ]
            if not cols:
                continue
            part = frame[cols]
            if direction != "other":
                part = part.rename(columns=lambda c: str(c)[4:])
            if direction in _SUBJECTS:
                subject = _SUBJECTS[direction]
            elif prefix:
                subject = "order accuracy and minimum detectable difference"
            else:
                subject = "order accuracy, ties and runs"
            if prefix:
                caption = (
                    f"{title}: {subject} {where}: paired two-level bootstrap difference (row minus row) "
                    f"[95% interval], p-value (Holm-adjusted p-value); {sig}."
                )
            else:
                caption = f"{title}: {subject} {where}: {spread} [95% two-level bootstrap interval]; {sig}."
            items.append(LatexTable(f"{spec.name}-{prefix}{direction}", caption, part))
    if items:
        items[0].notes = list(table.footnotes)
    return items


def _latex(table: QuestionTable) -> str:
    """``<name>.tex``: the table's floats, captions, labels (``tab:<suite>-<name>-...``) and notes."""
    return latex_document(
        table.suite,
        latex_items(table),
        f"Suite `{table.suite}`, table `{table.spec.name}`",
        f"{table.spec.name}.tex}}.",
    )


def write_question_table(table: QuestionTable, out_dir: str | Path) -> list[Path]:
    """``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (tidy numbers) in ``out_dir``, atomically."""
    out = Path(out_dir)
    name = table.spec.name
    return [
        atomic_write_text(out / f"{name}.md", _markdown(table)),
        atomic_write_text(out / f"{name}.tex", _latex(table)),
        atomic_write_text(out / f"{name}.csv", table.values.to_csv(index=False)),
    ]


__all__ = [
    "Comparison",
    "QuestionTable",
    "assemble",
    "build_question_table",
    "table_specs",
    "write_question_table",
]
