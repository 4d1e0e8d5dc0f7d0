"""Results tables in the paper's layout (rows = models, columns = t2v/v2t R@1 R@5 R@10 MdR MnR).

Every reproduced number carries its bootstrap interval (``45.6 [44.1, 47.0]``); published
reference rows from ``baselines/paper/*.csv`` sit beside the matching reproduced row with the
difference; ``*`` marks a significant difference from ``meanp`` (paired bootstrap over the same
queries); post-processed rows (DSL, QB-Norm) form a separate, marked block. pandas builds the
frames; tabulate (``DataFrame.to_markdown``) and ``DataFrame.to_latex`` format them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clip2video.engine.records import RunRecord, SuiteInfo, read_suite_info, read_suite_records
from clip2video.errors import Clip2VideoError
from clip2video.report.stats import METRIC_KEYS, PairedDiff, bootstrap_ci, paired_bootstrap

# Package data (clip2video/paper/*.csv), so a non-editable install has the published rows too.
PAPER_DIR = Path(str(resources.files("clip2video").joinpath("paper")))
REFERENCE_MODEL = "meanp"
_DISPLAY = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR"}
COLUMN_LABELS = {key: f"{key[:3]} {_DISPLAY[key[4:]]}" for key in METRIC_KEYS}
NO_PUBLISHED = "no published number"
SIG_MARK = "*"
POST_MARK = "‡"
TEST_SELECTED_MARK = "§"


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
    values: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)


def load_published(paper_dir: str | Path = PAPER_DIR) -> pd.DataFrame:
    """All reference rows of ``paper_dir/*.csv`` (columns protocol, model, metric keys, source, note)."""
    frames = []
    for path in sorted(Path(paper_dir).glob("*.csv")):
        frame = pd.read_csv(path, dtype={"protocol": str, "model": str})
        missing = {"protocol", "model"} - set(frame.columns)
        if missing:
            raise TableError(
                f"{path}: missing column(s) {', '.join(sorted(missing))}; see baselines/paper/clip2video.csv"
            )
        unknown = set(frame.columns) - {"protocol", "model", "source", "note", *METRIC_KEYS}
        if unknown:
            raise TableError(
                f"{path}: unknown column(s) {', '.join(sorted(unknown))}; metric keys are {', '.join(METRIC_KEYS)}"
            )
        frame["file"] = path.name
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["protocol", "model", *METRIC_KEYS, "source", "note", "file"])
    out = pd.concat(frames, ignore_index=True)
    for key in METRIC_KEYS:
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


def fmt_cell(value: float, interval: tuple[float, float] | None = None, mark: str = "") -> str:
    """``45.6 [44.1, 47.0]`` (with a trailing significance mark where given)."""
    text = fmt(value)
    if interval is not None:
        text += f" [{fmt(interval[0])}, {fmt(interval[1])}]"
    return text + mark


def fmt_p(p: float) -> str:
    """A bootstrap p-value (resolution limited by the resamples)."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_delta(value: float) -> str:
    """A signed difference, ``+1.2`` / ``-0.3``."""
    return "n/a" if not np.isfinite(value) else f"{value:+.1f}"


def resamples_of(records: list[RunRecord]) -> int:
    """The suite's bootstrap resamples (config `eval.bootstrap`, default 1000)."""
    for rec in records:
        value = (
            rec.config.get("eval", {}).get("bootstrap") if isinstance(rec.config.get("eval"), dict) else None
        )
        if value:
            return int(value)
    return 1000


def _model(rec: RunRecord) -> str:
    return str(rec.extra.get("model") or rec.name)


def _ties(rec: RunRecord) -> str:
    t2v, v2t = rec.metrics.get("t2v_ties"), rec.metrics.get("v2t_ties")
    return f"{fmt_int(t2v)}/{fmt_int(v2t)}"


def fmt_int(value: float | None) -> str:
    """A count, or ``n/a``."""
    return "n/a" if value is None or not np.isfinite(value) else str(int(value))


def _row_label(rec: RunRecord) -> str:
    label = rec.name
    if rec.postprocess:
        label += f" {POST_MARK}"
    if rec.extra.get("selected_on_test"):
        label += f" {TEST_SELECTED_MARK}"
    return label


def _significance(
    records: list[RunRecord], n_boot: int, seed: int, reference: str
) -> tuple[RunRecord | None, dict[str, dict[str, PairedDiff]]]:
    ref = next((r for r in records if r.name == reference and not r.postprocess), None)
    if ref is None:
        return None, {}
    out = {}
    for rec in records:
        if rec is ref or rec.postprocess:
            continue
        if rec.ranks_t2v.shape != ref.ranks_t2v.shape or rec.ranks_v2t.shape != ref.ranks_v2t.shape:
            continue
        out[rec.name] = paired_bootstrap(rec, ref, n_boot=n_boot, seed=seed)
    return ref, out


def build_suite_table(
    records: list[RunRecord],
    info: SuiteInfo | None = None,
    published: pd.DataFrame | None = None,
    *,
    n_boot: int | None = None,
    seed: int = 0,
    reference: str = REFERENCE_MODEL,
) -> SuiteTable:
    """The suite's frames: plain rows (+ published and difference rows), post-processed rows, tests."""
    if not records:
        raise TableError("no run records to tabulate")
    info = info or SuiteInfo(suite="suite")
    published = load_published() if published is None else published
    n_boot = n_boot or resamples_of(records)
    protocol = info.protocol or records[0].protocol
    intervals = {r.name: bootstrap_ci(r, n_boot=n_boot, seed=seed) for r in records}
    ref, tests = _significance(records, n_boot, seed, reference)
    has_order = any(_order_value(r, "order_acc") is not None for r in records)
    has_reversal = any(_order_value(r, "order_changed_share") is not None for r in records)
    footnotes: list[str] = []
    values: list[dict[str, Any]] = []
    main_rows: list[dict[str, Any]] = []
    post_rows: list[dict[str, Any]] = []
    any_published = False

    for rec in records:
        diffs = tests.get(rec.name, {})
        row: dict[str, Any] = {"row": _row_label(rec)}
        for key in METRIC_KEYS:
            mark = SIG_MARK if key in diffs and diffs[key].significant else ""
            row[COLUMN_LABELS[key]] = fmt_cell(rec.metrics.get(key, np.nan), intervals[rec.name][key], mark)
            lo, hi = intervals[rec.name][key]
            d = diffs.get(key)
            values.append(
                {
                    "row": rec.name,
                    "block": "post-processed" if rec.postprocess else "plain",
                    "postprocess": rec.postprocess or "",
                    "metric": key,
                    "value": rec.metrics.get(key, np.nan),
                    "lo": lo,
                    "hi": hi,
                    "legacy": (rec.legacy or {}).get(key, np.nan),
                    f"delta_vs_{reference}": d.delta if d else np.nan,
                    "delta_lo": d.lo if d else np.nan,
                    "delta_hi": d.hi if d else np.nan,
                    "p": d.p if d else np.nan,
                    "significant": bool(d.significant) if d else False,
                }
            )
        row["ties t2v/v2t"] = _ties(rec)
        if has_order:
            row["order acc"] = fmt(_order_value(rec, "order_acc"))
        if has_reversal:
            row["reversal changes %"] = fmt(_order_value(rec, "order_changed_share"))
        if rec.postprocess:
            row["note"] = f"post-processed: {rec.postprocess}"
            post_rows.append(row)
            continue
        match = published[(published.protocol == rec.protocol) & (published.model == _model(rec))]
        if match.empty:
            row["note"] = NO_PUBLISHED
            main_rows.append(row)
            continue
        any_published = True
        pub = match.iloc[0]
        row["note"] = "published row below"
        main_rows.append(row)
        compared = rec.metrics
        if rec.legacy:
            compared = rec.legacy
            legacy_row = {
                "row": f"{rec.name} (legacy ties)",
                "note": "official tie handling, compare with published",
            }
            legacy_row.update({COLUMN_LABELS[k]: fmt(rec.legacy.get(k, np.nan)) for k in METRIC_KEYS})
            main_rows.append(legacy_row)
            differ = [
                k
                for k in METRIC_KEYS
                if k in rec.legacy and k in rec.metrics and not np.isclose(rec.legacy[k], rec.metrics[k])
            ]
            if differ:
                parts = ", ".join(f"{k} {fmt(rec.metrics[k])} (legacy {fmt(rec.legacy[k])})" for k in differ)
                footnotes.append(
                    f"{rec.name}: ties make the default `{rec.tie_policy}` policy differ from `legacy`: {parts}; "
                    f"tied queries t2v/v2t = {_ties(rec)}."
                )
        note = "; ".join(x for x in (str(pub.source), str(pub.note)) if x)
        pub_row = {"row": f"{rec.name} (published)", "note": note}
        pub_row.update({COLUMN_LABELS[k]: fmt(pub[k]) for k in METRIC_KEYS})
        diff_label = "legacy - published" if rec.legacy else "ours - published"
        diff_row = {"row": f"{rec.name} ({diff_label})", "note": ""}
        diff_row.update({COLUMN_LABELS[k]: fmt_delta(compared.get(k, np.nan) - pub[k]) for k in METRIC_KEYS})
        main_rows.extend([pub_row, diff_row])

    if any(r.postprocess for r in records):
        footnotes.append(
            f"{POST_MARK} post-processed rows (DSL, QB-Norm with its query bank's source) are computed from the cached "
            "similarities with test-set or query-bank statistics; they are not comparable with the plain rows."
        )
    if any(r.extra.get("selected_on_test") for r in records):
        footnotes.append(f"{TEST_SELECTED_MARK} the epoch was selected on the test split (optimistic).")
    for rec in records:
        dropped = rec.extra.get("dropped")
        if dropped:
            if isinstance(dropped, dict):
                detail = ", ".join(f"{k}={len(v) if isinstance(v, list) else v}" for k, v in dropped.items())
            else:
                detail = str(dropped)
            footnotes.append(
                f"{rec.name}: evaluated without missing test items ({detail}); the protocol changed."
            )
    if not any_published:
        footnotes.append(
            f"No published numbers for protocol `{protocol}` in baselines/paper/: the paper's ablation tables "
            "(TDB/TAB variants, K, w) could not be obtained in a citable form, so nothing is filled from memory; "
            "drop a CSV with columns protocol, model and metric keys into baselines/paper/ to add reference rows."
        )
    if ref is None:
        footnotes.append(f"No `{reference}` row: no significance tests.")
    else:
        footnotes.append(
            f"{SIG_MARK} differs significantly from `{reference}` (paired bootstrap over the same queries, "
            f"{n_boot} resamples, 95% interval excludes 0). Intervals: 95% percentile bootstrap over queries."
        )
    skipped = [
        r.name
        for r in records
        if r is not ref and not r.postprocess and r.name not in tests and ref is not None
    ]
    if skipped:
        footnotes.append(f"Not tested against `{reference}` (different query sets): {', '.join(skipped)}.")
    footnotes.extend(info.notes)

    sig_rows = []
    for name, diffs in tests.items():
        sig = {"row": name}
        for key in METRIC_KEYS:
            d = diffs[key]
            sig[COLUMN_LABELS[key]] = (
                f"{fmt_delta(d.delta)} [{fmt_delta(d.lo)}, {fmt_delta(d.hi)}] {fmt_p(d.p)}{SIG_MARK if d.significant else ''}"
            )
        sig_rows.append(sig)
    return SuiteTable(
        suite=info.suite,
        protocol=protocol,
        main=_frame(main_rows),
        postprocessed=_frame(post_rows),
        significance=_frame(sig_rows),
        values=pd.DataFrame(values),
        footnotes=footnotes,
    )


def _order_value(rec: RunRecord, key: str) -> float | None:
    """An order-sensitivity number of a row (recorded among its metrics or its extra fields)."""
    value = rec.metrics.get(key, rec.extra.get(key))
    return None if value is None else float(value)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.set_index("row").fillna("")


_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}


def _latex_escape(text: str) -> str:
    text = text.replace("\\", r"\textbackslash ")
    for char, repl in _LATEX_SPECIALS.items():
        text = text.replace(char, repl)
    return text.replace("~", r"\textasciitilde ").replace("^", r"\textasciicircum ")


def write_suite_tables(table: SuiteTable, out_dir: str | Path) -> list[Path]:
    """``table.md``, ``table.tex``, ``table.csv`` and ``values.csv`` (tidy numbers) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"Suite `{table.suite}` (protocol `{table.protocol}`)"
    md = [f"# {title}", "", table.main.to_markdown(), ""]
    tex = [
        f"% {title}: generated by `clip2video tables`; do not edit",
        table.main.rename_axis(None).to_latex(escape=True),
    ]
    sections = (
        (
            f"Post-processed rows {POST_MARK} (not comparable with the rows above)",
            f"post-processed rows ({POST_MARK})",
            table.postprocessed,
        ),
        (
            f"Paired bootstrap vs `{REFERENCE_MODEL}` (row minus {REFERENCE_MODEL})",
            f"paired bootstrap vs {REFERENCE_MODEL}",
            table.significance,
        ),
    )
    for heading, comment, frame in sections:
        if not frame.empty:
            md += [f"## {heading}", "", frame.to_markdown(), ""]
            tex += [f"% {comment}", frame.rename_axis(None).to_latex(escape=True)]
    md += ["Notes:", ""] + [f"- {note}" for note in table.footnotes] + [""]
    tex += (
        [r"\begin{itemize}"]
        + [rf"\item {_latex_escape(note)}" for note in table.footnotes]
        + [r"\end{itemize}", ""]
    )
    paths = [out / "table.md", out / "table.tex", out / "table.csv", out / "values.csv"]
    paths[0].write_text("\n".join(md))
    paths[1].write_text("\n".join(tex))
    combined = pd.concat(
        [table.main.assign(block="plain"), table.postprocessed.assign(block="post-processed")]
        if not table.postprocessed.empty
        else [table.main.assign(block="plain")]
    )
    combined.to_csv(paths[2])
    table.values.to_csv(paths[3], index=False)
    return paths


def regenerate(
    runs_dir: str | Path = "runs",
    out_dir: str | Path = "results",
    suites: list[str] | None = None,
    *,
    paper_dir: str | Path = PAPER_DIR,
    plots: bool = True,
    tracker: Any = None,
) -> dict[str, list[Path]]:
    """Rewrite ``results/<suite>/`` (tables and, with ``plots``, PNGs) from ``runs_dir``; returns the files."""
    from clip2video.engine.records import list_suites

    names = suites or list_suites(runs_dir)
    if not names:
        raise TableError(f"no recorded suites under {runs_dir}; run `clip2video ablation` first")
    published = load_published(paper_dir)
    written: dict[str, list[Path]] = {}
    for suite in names:
        records = read_suite_records(runs_dir, suite)
        table = build_suite_table(records, read_suite_info(runs_dir, suite), published)
        files = write_suite_tables(table, Path(out_dir) / suite)
        if plots:
            from clip2video.report.plots import write_plots

            files += write_plots(records, Path(out_dir) / suite, n_boot=resamples_of(records))
        if tracker is not None:
            for path in files:
                tracker.log_artifact(path, artifact_path=f"results/{suite}")
        written[suite] = files
    return written
