"""Merge several ``result.json`` files (suites, evals, other machines) into one table.

Like CLIP_benchmark's ``build``: ``clip2video build results/*/result.json --out merged/`` writes
``results.md``, ``results.csv`` (one tidy line per row and metric) and ``results.tex`` (the same
floats as the suite tables: one per direction, captions in words, one label each, the sources as
table notes). Each row is ``<suite>/<row>``; its cells are ``mean ± std [lo, hi]`` (no ``±`` part
for a row run once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clip2video import metrics as metric_definitions
from clip2video.errors import Clip2VideoError
from clip2video.fileio import atomic_path, atomic_write_text
from clip2video.report import tables
from clip2video.report.result_file import read_result_file
from clip2video.report.tables import LATEX_ENV_MACRO, METRIC_KEYS, LatexTable, fmt, latex_float, latex_label

DEFAULT_METRICS = tuple(METRIC_KEYS)
BUILD_FILES = ("results.md", "results.csv", "results.tex")


class BuildError(Clip2VideoError):
    """The result files cannot be merged."""


def label_of(key: str) -> str:
    """A metric key's column label (``t2v_R1`` -> ``t2v R@1``), from the metric definitions."""
    if hasattr(metric_definitions, "metric_label"):
        return str(metric_definitions.metric_label(key))
    return getattr(tables, "COLUMN_LABELS", {}).get(key, key.replace("_", " "))


@dataclass
class Merged:
    """The merged display table, the tidy numbers and one line per source file."""

    table: pd.DataFrame
    tidy: pd.DataFrame
    sources: list[str]


def _cell(stats: dict[str, Any] | None, single: bool) -> str:
    if not stats or stats.get("mean") is None:
        return "n/a"
    text = fmt(stats["mean"])
    if not single and stats.get("std") is not None:
        text += f" ± {fmt(stats['std'])}"
    if stats.get("lo") is not None and stats.get("hi") is not None:
        text += f" [{fmt(stats['lo'])}, {fmt(stats['hi'])}]"
    return text


def merge_results(paths: list[str | Path], metrics: tuple[str, ...] = DEFAULT_METRICS) -> Merged:
    """Read every result file and merge their rows (in the order given)."""
    if not paths:
        raise BuildError("no result files given; pass results/<suite>/result.json (one or more)")
    files = [(path, read_result_file(path)) for path in paths]
    present = {key for _, data in files for row in data["rows"] for key in (row.get("metrics") or {})}
    unknown = [m for m in metrics if m not in present]
    if unknown:
        raise BuildError(
            f"--metrics {', '.join(unknown)}: in none of the result files; they hold {', '.join(sorted(present))}"
        )
    display: list[dict[str, Any]] = []
    tidy: list[dict[str, Any]] = []
    sources: list[str] = []
    seen: dict[str, int] = {}
    for n, (path, data) in enumerate(files, start=1):
        suite, protocol = str(data.get("suite", "?")), str(data.get("protocol", "?"))
        package = data.get("package") or {}
        code = (data.get("fingerprint") or {}).get("code") or {}
        sources.append(
            f"[{n}] {path}: suite `{suite}`, protocol `{protocol}`, {data.get('date', 'no date')}, "
            f"{package.get('name', '?')} {package.get('version', '?')} (sources {code.get('source_sha256', '?')})"
        )
        for row in data["rows"]:
            label = f"{suite}/{row['row']}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label += f" [{n}]"
            single = len(row.get("records") or []) <= 1
            checkpoints = [c for c in row.get("checkpoints") or [] if c]
            sha = ",".join(str(c.get("sha256") or "missing")[:12] for c in checkpoints)
            line: dict[str, Any] = {"row": label, "protocol": protocol, "runs": row.get("runs", "")}
            for key in metrics:
                stats = (row.get("metrics") or {}).get(key)
                line[label_of(key)] = _cell(stats, single)
                stats = stats or {}
                tidy.append(
                    {
                        "source": str(path),
                        "suite": suite,
                        "protocol": protocol,
                        "row": row["row"],
                        "model": row.get("model"),
                        "runs": row.get("runs"),
                        "date": data.get("date"),
                        "version": package.get("version"),
                        "checkpoint_sha256": sha,
                        "metric": key,
                        **{k: stats.get(k) for k in ("mean", "std", "lo", "hi")},
                    }
                )
            line["source"] = f"[{n}]"
            display.append(line)
    table = pd.DataFrame(display).set_index("row")
    return Merged(table, pd.DataFrame(tidy), sources)


def _latex(merged: Merged, name: str) -> str:
    """The merged table as LaTeX floats: one per direction (and one for other metrics)."""
    frame = merged.table
    items = []
    for direction, words in (("t2v", "Text-to-video"), ("v2t", "Video-to-text")):
        cols = [c for c in frame.columns if str(c).startswith(direction)]
        if cols:
            part = frame[["protocol", "runs", *cols]].rename(columns={c: str(c)[4:] for c in cols})
            caption = (
                f"{words} retrieval of {len(merged.sources)} merged result file(s): mean ± std over seeds "
                "[95% two-level bootstrap interval]; a row run once has no ± part."
            )
            items.append(LatexTable(direction, caption, part.rename_axis("suite/row")))
    other = [
        c for c in frame.columns if not str(c).startswith(("t2v", "v2t")) and c not in ("protocol", "runs")
    ]
    if len(other) > 1:  # beyond the source column
        items.append(
            LatexTable(
                "other", "Other metrics of the merged result files.", frame[other].rename_axis("suite/row")
            )
        )
    if items:
        items[0].notes = list(merged.sources)
    notes_at = latex_label(name, items[0].key) if items else None
    head = [
        "% Merged result files: generated by `clip2video build`; do not edit.",
        r"% Requires \usepackage{booktabs} and \usepackage{graphicx} (pdflatex).",
        f"\\providecommand{{{LATEX_ENV_MACRO}}}{{table}}",
        "",
    ]
    return "\n".join(head + [latex_float(i, name, notes_at=notes_at) for i in items])


def write_build(merged: Merged, out_dir: str | Path, name: str = "build") -> list[Path]:
    """``results.md``, ``results.csv`` and ``results.tex`` in ``out_dir`` (atomically)."""
    out = Path(out_dir)
    md = ["# Merged results", "", merged.table.to_markdown(), "", "Sources:", ""]
    md += [f"- {s}" for s in merged.sources] + [""]
    paths = [out / f for f in BUILD_FILES]
    atomic_write_text(paths[0], "\n".join(md))
    with atomic_path(paths[1]) as tmp:
        merged.tidy.to_csv(tmp, index=False)
    atomic_write_text(paths[2], _latex(merged, name))
    return paths
