r"""Results tables in the paper's layout: one row per model, columns t2v/v2t R@1 R@5 R@10 MdR MnR.

Every reproduced number is ``mean ± std [lo, hi]``: the mean and sample standard deviation over
the model's seeds (no ``±`` part for a row run once: its ``seeds`` column says ``1 checkpoint`` or
``seed N``) and the 95% two-level bootstrap interval (seeds resampled
with replacement, videos resampled as clusters with all their captions; ``clip2video.metrics.
bootstrap``). ``*`` marks a difference from ``meanp`` whose paired bootstrap p-value (same
resamples for both models) stays below 0.05 after Holm's adjustment across the table's
comparisons. A footnote gives the minimum detectable R@1 difference at 80% power. The single-seed
per-query bootstrap that papers use is a separate, labelled section. Published reference rows from
``clip2video/paper/*.csv`` (package data; ``tables --paper-dir`` adds others) sit beside the matching reproduced row with the difference; post-processed
rows (DSL, QB-Norm) form a separate, marked block. pandas builds the frames; tabulate
(``DataFrame.to_markdown``) formats Markdown; ``latex_tables`` writes LaTeX for a paper:
booktabs floats scaled to ``\linewidth`` (a column in a two-column paper), one caption in words
and one ``\label`` each, and the notes as table notes under the tabular. The floats are column-wide
``table`` environments; ``\newcommand{\ClipVideoTableEnv}{table*}`` before ``\input{table.tex}``
makes them page-wide ``table*`` floats (same labels).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clip2video.engine.records import (
    RunRecord,
    SuiteInfo,
    read_suite_info,
    read_suite_records,
    recorded_suites,
    unlisted_rows,
)
from clip2video.errors import Clip2VideoError
from clip2video.fileio import atomic_files, safe_name
from clip2video.metrics import METRIC_KEYS as CORE_KEYS
from clip2video.metrics import is_metric_key, metric_label
from clip2video.metrics.bootstrap import PairedDiff, holm, minimum_detectable_difference, paired_difference
from clip2video.report.groups import ORDER_KEY, ORDER_WINS, ModelGroup, group_records, summarise
from clip2video.report.platforms import platform_note
from clip2video.report.result_file import runs_label, write_result_file

# Package data (clip2video/paper/*.csv), so a non-editable install has the published rows too.
PAPER_DIR = Path(str(resources.files("clip2video").joinpath("paper")))
REFERENCE_MODEL = "meanp"
# The default metric columns; a table shows the metric keys its rows' summaries hold (``table_keys``):
# other recall cut-offs (``[eval] recall_ks``) and registered metrics, labelled by their definitions.
METRIC_KEYS = tuple(k for k in CORE_KEYS if is_metric_key(k, table=True))
NO_PUBLISHED = "no published number"
SIG_MARK = "*"
POST_MARK = "‡"
TEST_SELECTED_MARK = "§"
ALPHA = 0.05
POWER = 0.8


class TableError(Clip2VideoError):
    """A published-reference CSV or a suite's records cannot be tabulated."""


@dataclass
class SuiteTable:
    """The frames and footnotes of one suite's results."""

    suite: str
    protocol: str
    main: pd.DataFrame
    postprocessed: pd.DataFrame
    significance: pd.DataFrame
    per_query: pd.DataFrame
    values: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)
    groups: list[ModelGroup] = field(default_factory=list)


def load_published(paper_dir: str | Path = PAPER_DIR) -> pd.DataFrame:
    """All reference rows of ``paper_dir/*.csv`` (columns protocol, model, metric keys, source, note)."""
    frames = []
    for path in sorted(Path(paper_dir).glob("*.csv")):
        frame = pd.read_csv(path, dtype={"protocol": str, "model": str})
        missing = {"protocol", "model"} - set(frame.columns)
        if missing:
            raise TableError(
                f"{path}: missing column(s) {', '.join(sorted(missing))}; see clip2video/paper/clip2video.csv in the package"
            )
        unknown = {
            c
            for c in frame.columns
            if c not in ("protocol", "model", "source", "note") and not is_metric_key(c)
        }
        if unknown:
            raise TableError(
                f"{path}: unknown column(s) {', '.join(sorted(unknown))}; metric keys are {', '.join(METRIC_KEYS)}, ..."
            )
        frame["file"] = path.name
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["protocol", "model", *METRIC_KEYS, "source", "note", "file"])
    out = pd.concat(frames, ignore_index=True)
    for key in dict.fromkeys([*METRIC_KEYS, *(c for c in out.columns if is_metric_key(c))]):
        out[key] = pd.to_numeric(out[key], errors="coerce") if key in out else np.nan
    for col in ("source", "note"):
        out[col] = out[col].fillna("") if col in out else ""
    dupes = out[out.duplicated(["protocol", "model"], keep=False)]
    if not dupes.empty:
        pairs = ", ".join(sorted({f"{p}/{m}" for p, m in zip(dupes.protocol, dupes.model, strict=True)}))
        raise TableError(
            f"{paper_dir}: more than one published row for {pairs}; keep one per protocol and model"
        )
    return out


def fmt(value: float | None) -> str:
    """One number as the tables print it."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.1f}"


def fmt_cell(
    value: float, interval: tuple[float, float] | None = None, mark: str = "", std: float | None = None
) -> str:
    """``45.6 ± 1.2 [44.1, 47.0]`` (without ``std``, no ``±`` part: a row run once)."""
    text = fmt(value)
    if std is not None:
        text += f" ± {fmt(std)}"
    if interval is not None:
        text += f" [{fmt(interval[0])}, {fmt(interval[1])}]"
    return text + mark


def fmt_p(p: float) -> str:
    """A bootstrap p-value (resolution limited by the resamples)."""
    if not np.isfinite(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_delta(value: float) -> str:
    """A signed difference, ``+1.2`` / ``-0.3``."""
    return "n/a" if not np.isfinite(value) else f"{value:+.1f}"


def fmt_int(value: float | None) -> str:
    """A count (a mean count with one decimal), or ``n/a``."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def resamples_of(records: list[RunRecord]) -> int:
    """The suite's bootstrap resamples (config `eval.bootstrap`, default 1000)."""
    for rec in records:
        ev = rec.config.get("eval")
        if isinstance(ev, dict) and ev.get("bootstrap"):
            return int(ev["bootstrap"])
        suite = rec.config.get("suite")
        if isinstance(suite, dict) and isinstance(suite.get("eval"), dict) and suite["eval"].get("bootstrap"):
            return int(suite["eval"]["bootstrap"])
    return 1000


def _label(group: ModelGroup) -> str:
    label = group.label
    if group.postprocess:
        label += f" {POST_MARK}"
    if any(r.extra.get("selected_on_test") for r in group.records):
        label += f" {TEST_SELECTED_MARK}"
    return label


def _ties(group: ModelGroup) -> str:
    means = []
    for key in ("t2v_ties", "v2t_ties"):
        values = [r.metrics.get(key, np.nan) for r in group.records]
        means.append(float(np.mean(values)))
    return f"{fmt_int(means[0])}/{fmt_int(means[1])}"


def table_keys(groups: list[ModelGroup]) -> tuple[str, ...]:
    """The metric columns of a table: every table metric its rows' summaries hold (the run's recall
    cut-offs and the registered metrics), in key order."""
    keys: dict[str, None] = {}
    for group in groups:
        if group.summary is not None:
            keys.update(dict.fromkeys(k for k in group.summary.keys if is_metric_key(k, table=True)))
    return tuple(keys) or METRIC_KEYS


@dataclass
class _Tests:
    """Paired comparisons against the reference (keyed by the row's label) and any extra pairs
    (keyed ``"a - b"``), with p-values Holm-adjusted across all of them (one family)."""

    reference: ModelGroup | None
    diffs: dict[str, dict[str, PairedDiff]]
    adjusted: dict[str, dict[str, float]]
    skipped: list[str]
    family: int
    pairs: dict[str, tuple[ModelGroup, ModelGroup]] = field(default_factory=dict)  # key -> (row, minus row)

    def significant(self, label: str, key: str) -> bool:
        p = self.adjusted.get(label, {}).get(key, np.nan)
        d = self.diffs.get(label, {}).get(key)
        return bool(d is not None and d.delta != 0.0 and np.isfinite(p) and p < ALPHA)


def _tests(groups: list[ModelGroup], reference: str, extra_pairs: Sequence[tuple[str, str]] = ()) -> _Tests:
    """Every plain row minus ``reference``, plus ``extra_pairs`` (row names ``(a, b)``: a minus b),
    paired over the same resamples; one Holm family."""
    plain = [g for g in groups if not g.postprocess]
    ref = next((g for g in plain if g.model == reference), None)
    diffs: dict[str, dict[str, PairedDiff]] = {}
    pairs: dict[str, tuple[ModelGroup, ModelGroup]] = {}
    skipped: list[str] = []
    wanted: list[tuple[str, ModelGroup, ModelGroup]] = []
    if ref is not None and ref.summary is not None:
        wanted += [(g.label, g, ref) for g in plain if g is not ref and g.summary is not None]
    for a, b in extra_pairs:
        ga, gb = (next((g for g in plain if g.model == name), None) for name in (a, b))
        if ga is not None and gb is not None and ga.summary is not None and gb.summary is not None:
            wanted.append((f"{ga.label} - {gb.label}", ga, gb))
    for key, group, against in wanted:
        assert group.summary is not None and against.summary is not None
        if group.summary.resampling != against.summary.resampling:
            skipped.append(key)
            continue
        tested = paired_difference(group.summary, against.summary)
        diffs[key] = {k: v for k, v in tested.items() if is_metric_key(k, table=True) or k == ORDER_KEY}
        pairs[key] = (group, against)
    family = [(label, key) for label, d in diffs.items() for key in d]
    adjusted_p = holm([diffs[label][key].p for label, key in family])
    adjusted: dict[str, dict[str, float]] = {}
    for (label, key), p in zip(family, adjusted_p, strict=True):
        adjusted.setdefault(label, {})[key] = float(p)
    n_family = int(np.count_nonzero(np.isfinite(adjusted_p))) if len(family) else 0
    return _Tests(ref, diffs, adjusted, skipped, n_family, pairs)


def _cell(group: ModelGroup, key: str, mark: str = "") -> str:
    """``mean ± std [lo, hi]``; without the interval where nothing is resampled (a per-seed
    scalar of a single seed)."""
    s = group.summary
    assert s is not None
    if key not in s.keys:
        return "n/a"
    interval = s.interval(key) if s.resampled(key) else None
    return fmt_cell(s.point(key), interval, mark, std=s.std(key) if len(group.records) > 1 else None)


def row_cells(
    group: ModelGroup, tests: _Tests, keys: tuple[str, ...], *, has_order: bool, has_reversal: bool = False
) -> dict[str, Any]:
    """One table row: its label, each metric's cell (marked where it differs from the table's
    reference after Holm), the tie counts, order accuracy and the reversal share where the table has
    those columns, and how many runs it averages."""
    row: dict[str, Any] = {"row": _label(group)}
    for key in keys:
        mark = SIG_MARK if tests.significant(group.label, key) else ""
        row[metric_label(key)] = _cell(group, key, mark)
    row["ties t2v/v2t"] = _ties(group)
    if has_order:
        mark = SIG_MARK if tests.significant(group.label, ORDER_KEY) else ""
        row["order acc"] = _cell(group, ORDER_KEY, mark) if group.has(ORDER_KEY) else "n/a"
    if has_reversal:
        row["reversal changes %"] = (
            _cell(group, "order_changed_share") if group.has("order_changed_share") else "n/a"
        )
    row["seeds"] = runs_label(group)
    return row


def build_suite_table(
    records: list[RunRecord],
    info: SuiteInfo | None = None,
    published: pd.DataFrame | None = None,
    *,
    n_boot: int | None = None,
    seed: int = 0,
    reference: str = REFERENCE_MODEL,
    unlisted: list[str] | None = None,
) -> SuiteTable:
    """The suite's frames: one row per model (+ published and difference rows), post-processed
    rows, paired tests vs ``reference``, the single-seed per-query section, and tidy values."""
    if not records:
        raise TableError("no run records to tabulate")
    info = info or SuiteInfo(suite="suite")
    published = load_published() if published is None else published
    n_boot = n_boot or resamples_of(records)
    protocol = info.protocol or records[0].protocol
    groups = summarise(group_records(records), n_boot=n_boot, seed=seed)
    keys = table_keys(groups)
    tests = _tests(groups, reference)
    has_order = any(g.has(ORDER_KEY) for g in groups)
    has_reversal = any(g.has("order_changed_share") for g in groups)
    footnotes: list[str] = []
    main_rows: list[dict[str, Any]] = []
    post_rows: list[dict[str, Any]] = []
    any_published = False

    for group in groups:
        row = row_cells(group, tests, keys, has_order=has_order, has_reversal=has_reversal)
        if group.postprocess:
            row["note"] = f"post-processed: {group.postprocess}"
            post_rows.append(row)
            continue
        match = published[(published.protocol == group.first.protocol) & (published.model == group.model)]
        if match.empty:
            row["note"] = NO_PUBLISHED
            main_rows.append(row)
            continue
        any_published = True
        main_rows.append({**row, "note": "published row below"})
        main_rows.extend(_published_rows(group, match.iloc[0], footnotes, keys))

    footnotes.extend(
        _footnotes(groups, tests, info, protocol, reference, n_boot, any_published, unlisted, keys)
    )
    return SuiteTable(
        suite=info.suite,
        protocol=protocol,
        main=_frame(main_rows),
        postprocessed=_frame(post_rows),
        significance=_frame(_significance_rows(tests)),
        per_query=_frame(_per_query_rows(groups, has_order, keys)),
        values=_values(groups, tests, reference),
        footnotes=footnotes,
        groups=groups,
    )


def _published_rows(
    group: ModelGroup, pub: pd.Series, footnotes: list[str], keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The legacy-ties row (where recorded), the published row and the difference row."""
    assert group.summary is not None
    means = {k: group.summary.point(k) for k in keys if k in group.summary.keys}
    legacy = group.legacy_mean()
    rows: list[dict[str, Any]] = []
    compared = means
    if legacy:
        compared = legacy
        legacy_row = {
            "row": f"{group.label} (legacy ties)",
            "note": "official tie handling, compare with published",
        }
        legacy_row.update({metric_label(k): fmt(legacy.get(k, np.nan)) for k in keys})
        rows.append(legacy_row)
        differ = [k for k in keys if k in legacy and k in means and not np.isclose(legacy[k], means[k])]
        if differ:
            parts = ", ".join(f"{k} {fmt(means[k])} (legacy {fmt(legacy[k])})" for k in differ)
            footnotes.append(
                f"{group.label}: ties make the default `{group.first.tie_policy}` policy differ from `legacy`: "
                f"{parts}; tied queries t2v/v2t = {_ties(group)}."
            )
    note = "; ".join(x for x in (str(pub.source), str(pub.note)) if x)
    pub_row = {"row": f"{group.label} (published)", "note": note}
    pub_row.update({metric_label(k): fmt(pub.get(k, np.nan)) for k in keys})
    diff_label = "legacy - published" if legacy else "ours - published"
    diff_row = {"row": f"{group.label} ({diff_label})", "note": ""}
    diff_row.update({metric_label(k): fmt_delta(compared.get(k, np.nan) - pub.get(k, np.nan)) for k in keys})
    return [*rows, pub_row, diff_row]


def _mde(tests: _Tests, groups: list[ModelGroup], key: str) -> tuple[float, str]:
    """Minimum detectable difference of ``key`` and how its standard error was obtained."""
    ses = [d[key].se for d in tests.diffs.values() if key in d and np.isfinite(d[key].se)]
    if ses:
        how = f"median standard error of the {len(ses)} paired difference(s) vs `{tests.reference.label}`"  # type: ignore[union-attr]
        return minimum_detectable_difference(float(np.median(ses)), alpha=ALPHA, power=POWER), how
    base = tests.reference or next((g for g in groups if not g.postprocess), groups[0])
    assert base.summary is not None
    se = base.summary.se(key) * np.sqrt(2.0)
    how = f"sqrt(2) x the bootstrap standard error of `{base.label}` (no paired comparison: two independent models assumed)"
    return minimum_detectable_difference(se, alpha=ALPHA, power=POWER), how


def _footnotes(
    groups: list[ModelGroup],
    tests: _Tests,
    info: SuiteInfo,
    protocol: str,
    reference: str,
    n_boot: int,
    any_published: bool,
    unlisted: list[str] | None,
    keys: tuple[str, ...] = METRIC_KEYS,
) -> list[str]:
    """The table's footnotes: row marks, the method and its power, what was left out, the suite's notes."""
    notes = _row_mark_notes(groups)
    if not any_published:
        notes.append(
            f"No published numbers for protocol `{protocol}` in the published-rows folder: the paper's ablation tables "
            "(TDB/TAB variants, K, w) could not be obtained in a citable form, so nothing is filled from memory; "
            "pass a folder of CSVs with columns protocol, model and metric keys to `clip2video tables --paper-dir` to add reference rows."
        )
    notes += _method_notes(groups, tests, reference, n_boot, keys)
    notes += _coverage_notes(groups, unlisted)
    notes.append(
        "Single-seed per-query bootstrap (its own section, as papers report it): the first seed of each model, "
        "text and video queries resampled independently; it ignores caption clusters and seed spread, so "
        "its intervals are narrower than the two-level ones."
    )
    notes.append(platform_note(groups))
    notes.extend(info.notes)
    return notes


def _row_mark_notes(groups: list[ModelGroup]) -> list[str]:
    """What the row marks mean (post-processed, selected on test) and which rows lost test items."""
    notes: list[str] = []
    records = [r for g in groups for r in g.records]
    if any(g.postprocess for g in groups):
        notes.append(
            f"{POST_MARK} post-processed rows (DSL, QB-Norm with its query bank's source) are computed from the cached "
            "similarities with test-set or query-bank statistics; they are not comparable with the plain rows."
        )
    if any(r.extra.get("selected_on_test") for r in records):
        notes.append(f"{TEST_SELECTED_MARK} the epoch was selected on the test split (optimistic).")
    frozen = [g.label for g in groups if any(r.extra.get("backbone") == "frozen" for r in g.records)]
    if frozen:
        untrained = [g.label for g in groups if any(r.extra.get("frozen_untrained") for r in g.records)]
        trained = [g for g in frozen if g not in untrained]
        text = (
            f"Frozen backbone (train.backbone = frozen) in {', '.join(f'`{g}`' for g in frozen)}: the pretrained "
            "backbone does not train; its frame and caption features are computed once per suite"
        )
        text += f"; {', '.join(f'`{g}`' for g in trained)} train only their heads." if trained else "."
        if untrained:
            text += (
                f" {', '.join(f'`{g}`' for g in untrained)}: no trainable parameters with a frozen backbone, "
                "evaluated as is (not trained; every seed gives the same numbers)."
            )
        notes.append(text)
    for rec in records:
        dropped = rec.extra.get("dropped")
        if dropped:
            if isinstance(dropped, dict):
                detail = ", ".join(f"{k}={len(v) if isinstance(v, list) else v}" for k, v in dropped.items())
            else:
                detail = str(dropped)
            text = f"{rec.model}: evaluated without missing test items ({detail}); the protocol changed."
            if text not in notes:
                notes.append(text)
    return notes


def _method_notes(
    groups: list[ModelGroup], tests: _Tests, reference: str, n_boot: int, keys: tuple[str, ...] = METRIC_KEYS
) -> list[str]:
    """How cells, intervals and significance marks are computed, and the minimum detectable R@1 difference."""
    base = groups[0].summary
    assert base is not None
    n_seeds = sorted({g.summary.n_seeds for g in groups if g.summary is not None})
    seeds_text = "/".join(str(n) for n in n_seeds)
    notes = [
        f"Cells: mean ± sample std over {seeds_text} seed(s) (no ± part for a row run once: one checkpoint or "
        f"one seed) [95% two-level bootstrap "
        f"interval: seeds resampled with replacement and test videos resampled as clusters with all their "
        f"captions, {n_boot} resamples; statistic = mean over the drawn seeds]. Queries: "
        f"{base.resampling.num_captions} text-to-video (captions) in {base.resampling.num_videos} clusters "
        f"(videos), {base.resampling.num_videos} video-to-text."
    ]
    if tests.reference is None:
        notes.append(f"No `{reference}` row: no significance tests.")
    else:
        notes.append(
            f"{SIG_MARK} differs from `{reference}`: paired two-level bootstrap over the same resamples (same "
            f"seed draws, same video clusters), two-sided p-value adjusted by Holm's method across this table's "
            f"{tests.family} comparisons; marked only when the adjusted p < {ALPHA:g}."
        )
    firsts = [next((k for k in keys if k.startswith(f"{d}_R")), f"{d}_R1") for d in ("t2v", "v2t")]
    mdes = [(metric_label(key), *_mde(tests, groups, key)) for key in firsts]
    notes.append(
        f"Minimum detectable difference at {POWER:.0%} power (two-sided alpha {ALPHA:g}, before Holm): "
        + "; ".join(f"{label} {fmt(v)} points ({how})" for label, v, how in mdes)
        + f", for these {base.resampling.num_captions} queries, {base.resampling.num_videos} clusters and "
        f"the measured spread over {seeds_text} seed(s)."
    )
    if tests.skipped:
        notes.append(
            f"Not tested against `{reference}` (different query sets or seed counts): {', '.join(tests.skipped)}."
        )
    return notes


def _coverage_notes(groups: list[ModelGroup], unlisted: list[str] | None) -> list[str]:
    """What the table leaves out: stale row folders, and per-caption order wins a record lacks."""
    notes: list[str] = []
    if unlisted:
        notes.append(
            f"Ignored {len(unlisted)} row folder(s) that suite.json does not list (stale rows of an earlier "
            f"run): {', '.join(unlisted)}."
        )
    if any(g.has(ORDER_KEY) and ORDER_WINS not in g.records[0].arrays for g in groups):
        notes.append(
            "order acc: rows without per-caption order wins (`order_wins`) in their record get an interval from "
            "the seed level only (no per-caption resampling); the per-query section shows their value alone."
        )
    return notes


def _significance_rows(tests: _Tests) -> list[dict[str, Any]]:
    rows = []
    for label, diffs in tests.diffs.items():
        row: dict[str, Any] = {"row": label}
        for key, d in diffs.items():
            p_holm = tests.adjusted[label][key]
            mark = SIG_MARK if tests.significant(label, key) else ""
            column = metric_label(key) if is_metric_key(key) else "order acc"
            row[column] = (
                f"{fmt_delta(d.delta)} [{fmt_delta(d.lo)}, {fmt_delta(d.hi)}] {fmt_p(d.p)} "
                f"(Holm {fmt_p(p_holm)}){mark}"
            )
        rows.append(row)
    return rows


def _per_query_rows(groups: list[ModelGroup], has_order: bool, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        s = group.per_query
        assert s is not None
        row: dict[str, Any] = {"row": f"{_label(group)} (seed {group.first.seed})"}
        for key in keys:
            row[metric_label(key)] = fmt_cell(s.point(key), s.interval(key)) if key in s.keys else "n/a"
        if has_order:
            if ORDER_KEY not in s.keys:
                row["order acc"] = "n/a"
            elif ORDER_WINS in group.first.arrays:
                row["order acc"] = fmt_cell(s.point(ORDER_KEY), s.interval(ORDER_KEY))
            else:  # a recorded scalar: no per-caption data to resample
                row["order acc"] = fmt(s.point(ORDER_KEY))
        rows.append(row)
    return rows


def _values(groups: list[ModelGroup], tests: _Tests, reference: str) -> pd.DataFrame:
    """Tidy numbers: one line per (row, seed, metric) and a ``seed = "mean"`` summary line per
    (row, metric) with std, interval, standard error, per-query interval and the paired test."""
    lines: list[dict[str, Any]] = []
    for group in groups:
        s, pq = group.summary, group.per_query
        assert s is not None and pq is not None
        base = {
            "row": group.label,
            "model": group.model,
            "postprocess": group.postprocess or "",
            "block": "post-processed" if group.postprocess else "plain",
        }
        for key in s.keys:
            if not (is_metric_key(key, table=True) or key.startswith("order_")):
                continue
            for i, rec in enumerate(group.records):
                lines.append(
                    {
                        **base,
                        "seed": rec.seed,
                        "record": rec.name,
                        "metric": key,
                        "value": s.per_seed[i, s.keys.index(key)],
                        "legacy": (rec.legacy or {}).get(key, np.nan),
                    }
                )
            d = tests.diffs.get(group.label, {}).get(key)
            lo, hi = s.interval(key)
            pq_lo, pq_hi = pq.interval(key) if key in pq.keys else (np.nan, np.nan)
            lines.append(
                {
                    **base,
                    "seed": "mean",
                    "record": "",
                    "metric": key,
                    "value": s.point(key),
                    "std": s.std(key),
                    "lo": lo,
                    "hi": hi,
                    "se": s.se(key),
                    "n_seeds": s.n_seeds,
                    "per_query_lo": pq_lo,
                    "per_query_hi": pq_hi,
                    f"delta_vs_{reference}": d.delta if d else np.nan,
                    "delta_lo": d.lo if d else np.nan,
                    "delta_hi": d.hi if d else np.nan,
                    "delta_se": d.se if d else np.nan,
                    "p": d.p if d else np.nan,
                    "p_holm": tests.adjusted.get(group.label, {}).get(key, np.nan),
                    "significant": tests.significant(group.label, key),
                }
            )
    return pd.DataFrame(lines)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.set_index("row").fillna("")


# ----------------------------------------------------------------------------------------------
# LaTeX (booktabs) and files
# ----------------------------------------------------------------------------------------------

_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "`": r"\textasciigrave{}",
    "±": r"$\pm$",
    "‡": r"\ddag{}",
    "§": r"\S{}",
    "≤": r"$\leq$",
    "−": "-",
}
_CODE = re.compile(r"`([^`]+)`")


def latex_escape(text: str) -> str:
    """``text`` as LaTeX source for pdflatex: specials escaped (``< > | _`` and backticks
    included), ```code``` spans as ``\texttt``, the table's symbols (± ‡ §) as commands."""
    parts = _CODE.split(str(text))
    out = []
    for i, part in enumerate(parts):
        escaped = "".join(_LATEX_CHARS.get(ch, ch) for ch in part)
        out.append(rf"\texttt{{{escaped}}}" if i % 2 else escaped)
    return "".join(out)


_LATEX_HEADER = (
    r"% Requires \usepackage{booktabs} and \usepackage{graphicx} in the preamble (pdflatex); nothing else."
)
LATEX_ENV_MACRO = r"\ClipVideoTableEnv"  # the float environment: table (default) or table*
_DIRECTION_WORDS = {"t2v": "Text-to-video", "v2t": "Video-to-text"}
_CELL = re.compile(r"^(?P<head>.*?) (?P<interval>\[[^\]]*\])(?P<tail>.*)$")


@dataclass
class LatexTable:
    """One float: its label suffix, its caption in words, its frame and the notes under it."""

    key: str
    caption: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def latex_label(suite: str, key: str) -> str:
    """``tab:<suite>-<key>`` with only characters every LaTeX label accepts."""
    return "tab:" + re.sub(r"[^A-Za-z0-9.:-]+", "-", f"{suite}-{key}")


def _latex_cell(text: str) -> str:
    """A cell as LaTeX: ``mean ± std`` over ``[lo, hi]`` (a paired difference: ``delta``, ``[lo, hi]``,
    ``p`` and Holm's ``p``, one per line), so that a column stays narrow; anything else on one line."""
    match = _CELL.match(text)
    if not match:
        return latex_escape(text)
    head, interval, tail = match["head"], match["interval"], match["tail"].strip()
    mark = ""
    while tail and tail[-1] in (SIG_MARK, POST_MARK, TEST_SELECTED_MARK):
        mark, tail = tail[-1] + mark, tail[:-1].rstrip()
    lead = tail[: len(tail) - len(tail.lstrip("*‡§"))]
    tail = tail[len(lead) :].strip()
    lines = [latex_escape(f"{head}{lead}{mark}"), latex_escape(interval)]
    p_values = re.match(r"^(p[=<]\S+) \((Holm p[=<][^)]+)\)$", tail)
    if p_values:  # "p=0.012 (Holm p=0.048)": one p-value per line
        lines += [latex_escape(p_values[1]), latex_escape(p_values[2])]
    elif tail:
        lines.append(latex_escape(tail))
    return r"\begin{tabular}[t]{@{}r@{}}" + r"\\{}".join(lines) + r"\end{tabular}"


def latex_float(item: LatexTable, suite: str, *, notes_at: str | None) -> str:
    """A booktabs float: caption and ``\\label`` above; the tabular, scaled down to ``\\linewidth``
    only when wider (a column in a two-column paper, the page in ``table*``); then its notes as
    table notes under the tabular (a table without notes points to ``notes_at``)."""
    env = LATEX_ENV_MACRO
    frame = item.frame
    caption = latex_escape(item.caption)
    if not item.notes and notes_at:
        caption += rf" Notes: see Table~\ref{{{notes_at}}}."
    columns = [str(frame.index.name or "row"), *map(str, frame.columns)]
    lines = [
        rf"% {latex_escape(item.caption)}",
        rf"\begin{{{env}}}[tbp]",
        r"\centering\footnotesize\setlength{\tabcolsep}{3pt}",
        rf"\caption{{{caption}}}\label{{{latex_label(suite, item.key)}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        r"\begin{tabular}{l" + "r" * len(frame.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    for label, row in frame.iterrows():
        cells = [latex_escape(str(label)), *(_latex_cell(str(x)) for x in row.tolist())]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if item.notes:
        lines.append(r"\par\smallskip{\scriptsize\raggedright")
        lines += [rf"\noindent{{}}{latex_escape(note)}\par" for note in item.notes]
        lines.append("}")
    lines += [rf"\end{{{env}}}", ""]
    return "\n".join(lines)


def _where(table: SuiteTable) -> str:
    """``on the `synthetic` protocol (suite `ablation`)`` for the captions."""
    return f"on the `{table.protocol}` protocol (suite `{table.suite}`)"


def _spread(table: SuiteTable) -> str:
    """How the cells summarise runs: over N seeds, or a single run per row."""
    seeds = sorted({g.summary.n_seeds for g in table.groups if g.summary is not None}) or [1]
    if seeds == [1]:
        return "one run per row [95% two-level bootstrap interval]"
    return f"mean ± std over {'/'.join(map(str, seeds))} seeds [95% two-level bootstrap interval]"


_OTHER_WORDS = {
    "order acc": "order accuracy",
    "reversal changes %": "reversal sensitivity",
    "ties t2v/v2t": "ties",
}


def _route_notes(notes: list[str], keys: list[str]) -> dict[str, list[str]]:
    """Each note under the table it explains: the order-accuracy notes under the table with that
    column, the per-query note under the per-query table, everything else under the first table."""
    out: dict[str, list[str]] = {k: [] for k in keys}
    for note in notes:
        if note.startswith("Single-seed per-query") and "per-query-t2v" in out:
            out["per-query-t2v"].append(note)
        elif note.startswith(("order_acc", "order acc")) and "other" in out:
            out["other"].append(note)
        else:
            out[keys[0]].append(note)
    return out


def latex_tables(table: SuiteTable) -> list[LatexTable]:
    """The suite's LaTeX tables: each direction's metrics apart (so that each fits a column), the
    other columns, post-processed rows, the paired tests and the per-query section."""
    where, spread = _where(table), _spread(table)
    sig = f"{SIG_MARK} differs from `{REFERENCE_MODEL}` after Holm's adjustment"
    items: list[LatexTable] = []

    def split(frame: pd.DataFrame, prefix: str, what: str, extra: str) -> None:
        for direction in ("t2v", "v2t"):
            cols = [c for c in frame.columns if str(c).startswith(direction)]
            if cols:
                part = frame[cols].rename(columns=lambda c: str(c)[4:]).rename_axis("model")
                caption = f"{_DIRECTION_WORDS[direction]} retrieval{what} {where}: {spread}{extra}."
                items.append(LatexTable(f"{prefix}{direction}", caption, part))
        other = [c for c in frame.columns if not str(c).startswith(("t2v", "v2t"))]
        if other:
            named = [_OTHER_WORDS[c] for c in other if c in _OTHER_WORDS]
            subject = (
                ", ".join(named[:-1]) + (" and " if len(named) > 1 else "") + (named[-1] if named else "")
            )
            caption = f"{(subject or 'runs and notes').capitalize()}{what} {where}: {spread}{extra}."
            items.append(LatexTable(f"{prefix}other", caption, frame[other].rename_axis("model")))

    split(table.main, "", "", f"; {sig}")
    if not table.postprocessed.empty:
        split(
            table.postprocessed,
            "post-",
            f" of the post-processed rows {POST_MARK}",
            "; not comparable with the plain rows",
        )
    if not table.significance.empty:
        for direction in ("t2v", "v2t", "other"):
            cols = [
                c
                for c in table.significance.columns
                if str(c).startswith(direction)
                or (direction == "other" and not str(c).startswith(("t2v", "v2t")))
            ]
            if not cols:
                continue
            part = table.significance[cols].rename_axis("model")
            if direction != "other":
                part = part.rename(columns=lambda c: str(c)[4:])
            what = f"{_DIRECTION_WORDS[direction]} retrieval" if direction != "other" else "Order accuracy"
            caption = (
                f"{what} {where}: paired two-level bootstrap difference from `{REFERENCE_MODEL}` (row minus "
                f"{REFERENCE_MODEL}) [95% interval], p-value (Holm-adjusted p-value); {sig}."
            )
            items.append(LatexTable(f"paired-{direction}", caption, part))
    if not table.per_query.empty:
        for direction in ("t2v", "v2t", "other"):
            cols = [
                c
                for c in table.per_query.columns
                if str(c).startswith(direction)
                or (direction == "other" and not str(c).startswith(("t2v", "v2t")))
            ]
            if not cols:
                continue
            part = table.per_query[cols].rename_axis("model")
            if direction == "other":
                what = "order accuracy"
            else:
                what = f"{_DIRECTION_WORDS[direction].lower()} retrieval"
                part = part.rename(columns=lambda c: str(c)[4:])
            caption = (
                f"Single-seed per-query bootstrap of {what} {where}: the first seed of each row, queries "
                "resampled independently (as papers report it) [95% interval]."
            )
            items.append(LatexTable(f"per-query-{direction}", caption, part))
    keys = [i.key for i in items]
    routed = _route_notes(
        table.footnotes, [k for k in ("t2v", "other", "per-query-t2v") if k in keys] or keys[:1]
    )
    for item in items:
        item.notes = routed.get(item.key, [])
    return items


def latex_source(table: SuiteTable) -> str:
    """``table.tex``: the suite's floats (``table``, or ``table*`` where the document defines
    ``\\ClipVideoTableEnv`` as ``table*`` before the ``\\input``), captions, labels and notes."""
    return latex_document(
        table.suite,
        latex_tables(table),
        f"Suite `{table.suite}` (protocol `{table.protocol}`)",
        "table.tex} (\\renewcommand between suites to mix both).",
    )


def latex_document(suite: str, items: list[Any], what: str, input_hint: str) -> str:
    """A ``.tex`` file of floats: the header (what it is, the packages it needs, its labels, the
    ``table*`` switch before ``\\input{<input_hint>``) and each item's float, notes under the first."""
    notes_at = latex_label(suite, items[0].key) if items else None
    labels = ", ".join(latex_label(suite, i.key) for i in items)
    head = [
        f"% {what}: generated by `clip2video tables`; do not edit.",
        _LATEX_HEADER,
        f"% Labels: {labels}.",
        "% Column-wide table floats; for page-wide table* floats put \\newcommand{\\ClipVideoTableEnv}{table*}",
        f"% before \\input{{{input_hint}",
        "\\providecommand{\\ClipVideoTableEnv}{table}",
        "",
    ]
    return "\n".join(head + [latex_float(i, suite, notes_at=notes_at) for i in items])


def write_suite_tables(table: SuiteTable, out_dir: str | Path) -> list[Path]:
    """``table.md``, ``table.tex`` (LaTeX floats, see :func:`latex_source`), ``table.csv`` (display
    cells) and ``values.csv`` (tidy numbers, one line per seed and a summary line per metric) in
    ``out_dir``, each written atomically."""
    out = Path(out_dir)
    title = f"Suite `{table.suite}` (protocol `{table.protocol}`)"
    md = [f"# {title}", "", table.main.to_markdown(), ""]
    for heading, frame in (
        (f"Post-processed rows {POST_MARK} (not comparable with the rows above)", table.postprocessed),
        (
            f"Paired two-level bootstrap vs `{REFERENCE_MODEL}` (row minus {REFERENCE_MODEL}; Holm-adjusted)",
            table.significance,
        ),
        (
            "Single-seed per-query bootstrap (first seed; queries independent, as papers report)",
            table.per_query,
        ),
    ):
        if not frame.empty:
            md += [f"## {heading}", "", frame.to_markdown(), ""]
    md += ["Notes:", ""] + [f"- {note}" for note in table.footnotes] + [""]
    paths = [out / n for n in ("table.md", "table.tex", "table.csv", "values.csv")]
    frames = [table.main.assign(block="plain")]
    if not table.postprocessed.empty:
        frames.append(table.postprocessed.assign(block="post-processed"))
    with atomic_files() as batch:  # all four replaced, or (a full disk) none: the old ones stay
        batch.path(paths[0]).write_text("\n".join(md), encoding="utf-8")
        batch.path(paths[1]).write_text(latex_source(table), encoding="utf-8")
        pd.concat(frames).to_csv(batch.path(paths[2]))
        table.values.to_csv(batch.path(paths[3]), index=False)
    return paths


def suite_table(
    runs_dir: str | Path,
    suite: str,
    *,
    paper_dir: str | Path = PAPER_DIR,
    published: pd.DataFrame | None = None,
) -> SuiteTable:
    """Read a suite's listed rows and build its table (stale unlisted rows named in a footnote)."""
    records = read_suite_records(runs_dir, suite)
    return build_suite_table(
        records,
        read_suite_info(runs_dir, suite),
        load_published(paper_dir) if published is None else published,
        unlisted=unlisted_rows(runs_dir, suite),
    )


def results_frame(runs_dir: str | Path, suite: str) -> pd.DataFrame:
    """One row per model (index = row label), numeric columns: each metric's mean over seeds and
    ``<metric>_std``, ``<metric>_lo``, ``<metric>_hi`` (two-level interval); plus model,
    postprocess and n_seeds. The notebook API's ``clip2video.results`` wraps this."""
    table = suite_table(runs_dir, suite)
    summary = table.values[table.values.seed == "mean"]
    out = summary.pivot(index="row", columns="metric", values="value")
    for stat in ("std", "lo", "hi"):
        wide = summary.pivot(index="row", columns="metric", values=stat)
        out = out.join(wide.add_suffix(f"_{stat}"))
    meta = summary.drop_duplicates("row").set_index("row")[["model", "postprocess", "n_seeds"]]
    meta = meta.astype({"n_seeds": int})
    order = [g.label for g in table.groups]
    keys = [k for k in (*table_keys(table.groups), ORDER_KEY, "order_changed_share") if k in out.columns]
    columns = keys + [f"{k}_{s}" for k in keys for s in ("std", "lo", "hi")]
    return meta.join(out[columns]).loc[order].rename_axis("row")


def suite_metrics(table: SuiteTable) -> dict[str, float]:
    """Each row's summary as flat metrics for the suite's MLflow run: ``<row>/<metric>`` (the mean
    over seeds), ``<row>/<metric>_lo`` / ``_hi`` (the 95% two-level interval) and ``_std``."""
    out: dict[str, float] = {}
    values = table.values
    if values.empty:
        return out
    for _, line in values[values.seed == "mean"].iterrows():
        row = re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(line.row))
        for suffix, column in (("", "value"), ("_lo", "lo"), ("_hi", "hi"), ("_std", "std")):
            value = line.get(column)
            if value is not None and np.isfinite(float(value)):
                out[f"{row}/{line.metric}{suffix}"] = float(value)
    return out


def regenerate(
    runs_dir: str | Path = "runs",
    out_dir: str | Path = "results",
    suites: list[str] | None = None,
    *,
    paper_dir: str | Path = PAPER_DIR,
    plots: bool = True,
    tracker: Any = None,
    extra: Callable[[SuiteTable, Path], list[Path]] | None = None,
) -> dict[str, list[Path]]:
    """Rewrite ``results/<suite>/`` from ``runs_dir``: tables, ``result.json`` and, with ``plots``,
    PNG + PDF figures. With ``tracker`` (``clip2video.tracking``), the suite's MLflow run gets each
    row's mean and interval as metrics and every written file as an artifact (``results/``).
    ``extra(table, folder)`` writes more files per suite (``report.results``: one table per question)."""
    names = [safe_name(name, "suite name") for name in suites or recorded_suites(runs_dir)]
    if not names:
        raise TableError(f"no recorded suites under {runs_dir}; run `clip2video ablation` first")
    published = load_published(paper_dir)
    written: dict[str, list[Path]] = {}
    for suite in names:
        table = suite_table(runs_dir, suite, published=published)
        folder = Path(out_dir) / suite
        files = write_suite_tables(table, folder)
        if extra is not None:
            files += extra(table, folder)
        if plots:
            from clip2video.report.plots import write_plots

            files += write_plots(table.groups, folder, suite=suite, protocol=table.protocol)
        files.append(write_result_file(table, folder, records_dir=runs_dir))
        if tracker is not None:
            tracker.log_suite_results(suite, suite_metrics(table), [(path, "results") for path in files])
        written[suite] = files
    return written
