"""Reproduction verdict: a run's results folder against a shipped reference folder.

Tracked references live in ``reference/<suite>/`` (and ``reference/<suite>-avx2/`` for the run made
with ``ATEN_CPU_CAPABILITY=avx2``); user runs write ``results/<suite>/``. After a run, the verdict
compares the two folders' files (nothing is recomputed):

- **Means inside the reference's intervals.** For every table of the reference (each declared
  table's ``<name>.csv`` and the all-rows ``values.csv``, called ``table``) and every metric it
  shows: how many of the run's row means fall inside the reference's 95% two-level bootstrap
  interval of the same row, and which fall outside.
- **Readings.** ``readings.toml`` beside the reference (else in ``reference/<suite>/``) declares the
  README's readings, each a paired comparison of one table::

      [[readings]]
      table = "components"      # a declared table (its <table>.csv), or "table" (the all-rows table)
      row = "clip2video"
      vs = "meanp"              # the comparison row minus vs must be one of the table's comparisons
      metric = "t2v_R1"         # a metric key (t2v_R1, v2t_MnR, ...) or order_acc
      claim = "higher"          # higher | lower | no-difference (also spelled "none")
      sentence = "TDB and TAB together beat mean pooling on t2v R@1."   # the README sentence it backs

  In the run a reading **HOLDS** (higher/lower: significant after Holm in the claimed direction;
  no-difference: not significant and |delta| below the table's MDE of that metric), **FLIPS**
  (significant the other way; for no-difference: significant at all), is **NOT SIGNIFICANT**
  (higher/lower), **INCONCLUSIVE** (no-difference: not significant but |delta| at or above the MDE)
  or **MISSING** (the run has no such comparison). The same is said of the reference.

The reference is chosen by the CPU kernel set the run's rows recorded (``result.json``; else this
process's: ``torch.backends.cpu.get_cpu_capability()``, which honours ``ATEN_CPU_CAPABILITY``): ``avx2`` -> ``<suite>-avx2`` when it exists, else
``<suite>``; ``kernels=`` overrides the detection and a folder holding the tables overrides the choice.
The verdict names the reference used and both platforms (the rows' fingerprints in ``result.json``).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clip2video.errors import Clip2VideoError
from clip2video.fileio import atomic_write_text
from clip2video.metrics import is_metric_key, metric_label
from clip2video.metrics.bootstrap import minimum_detectable_difference
from clip2video.report.groups import ORDER_KEY
from clip2video.report.platforms import describe_platform

READINGS_FILE = "readings.toml"
VERDICT_FILE = "verdict.md"
RESULT_FILE = "result.json"  # report.result_file: every row's fingerprint
ALL_ROWS = "table"  # the all-rows table's name in readings and coverage (its numbers: values.csv)
CLAIMS = ("higher", "lower", "no-difference")
HOLDS, FLIPS, NOT_SIGNIFICANT, INCONCLUSIVE, MISSING = (
    "HOLDS",
    "FLIPS",
    "NOT SIGNIFICANT",
    "INCONCLUSIVE",
    "MISSING",
)
_SKIPPED_CSV = {"table.csv", "values.csv"}
_QUESTION_COLUMNS = {"table", "line", "row", "metric", "value", "lo", "hi"}
_READING_KEYS = {"table", "row", "vs", "metric", "claim", "sentence"}


class VerdictError(Clip2VideoError):
    """A reference folder, its readings or a results folder cannot be compared."""


@dataclass(frozen=True)
class Reading:
    """One README reading: ``row`` minus ``vs`` on ``metric`` of ``table`` is ``claim``."""

    table: str
    row: str
    vs: str
    metric: str
    claim: str
    sentence: str = ""

    @property
    def label(self) -> str:
        return f"{self.row} vs {self.vs}, {_metric_name(self.metric)} {self.claim}"


@dataclass(frozen=True)
class Outside:
    """A run's row mean outside the reference's interval."""

    row: str
    value: float
    lo: float
    hi: float


@dataclass
class Coverage:
    """One table and metric: how many run means lie inside the reference's intervals."""

    table: str
    metric: str
    inside: int
    total: int
    outside: list[Outside] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # reference rows the run lacks


@dataclass
class ReadingOutcome:
    """A reading's status in the run (and in the reference), with the run's numbers."""

    reading: Reading
    status: str
    delta: float = float("nan")
    p_holm: float = float("nan")
    mde: float = float("nan")
    reference_status: str = MISSING
    detail: str = ""


@dataclass
class Verdict:
    """The run against its reference: intervals coverage and readings."""

    suite: str
    run_dir: Path
    reference_dir: Path
    reason: str
    run_platforms: list[str]
    reference_platforms: list[str]
    coverage: list[Coverage]
    readings: list[ReadingOutcome]
    missing_tables: list[str] = field(default_factory=list)

    @property
    def inside(self) -> int:
        return sum(c.inside for c in self.coverage)

    @property
    def total(self) -> int:
        return sum(c.total for c in self.coverage)

    @property
    def holds(self) -> bool:
        """Every reading holds in the run."""
        return all(r.status == HOLDS for r in self.readings)

    def counts(self) -> dict[str, int]:
        """How many readings have each status."""
        out: dict[str, int] = {}
        for r in self.readings:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def summary(self) -> str:
        """One line: means inside, readings that hold / flip / ..."""
        readings = ", ".join(f"{n} {s}" for s, n in self.counts().items()) or "no readings declared"
        return (
            f"verdict for suite {self.suite!r} against {self.reference_dir}: {self.inside}/{self.total} row means "
            f"inside the reference's 95% intervals; readings: {readings}"
        )

    def terminal(self, max_outside: int = 10) -> str:
        """What the commands print: the platforms, the means outside the reference's intervals (at
        most ``max_outside``), one line per reading and the summary; ``verdict.md`` has it all."""
        lines = [
            f"Reproduction verdict: suite {self.suite!r} against {self.reference_dir} ({self.reason})",
            *(line.removeprefix("- ") for line in _platform_lines("Run platform", self.run_platforms)),
            *(
                line.removeprefix("- ")
                for line in _platform_lines("Reference platform", self.reference_platforms)
            ),
            f"Row means inside the reference's 95% intervals: {self.inside}/{self.total}",
        ]
        outside = [(c, o) for c in self.coverage for o in c.outside]
        lines += [
            f"  outside: {c.table} {o.row} {_metric_name(c.metric)} {_num(o.value)} "
            f"(reference [{_num(o.lo)}, {_num(o.hi)}])"
            for c, o in outside[:max_outside]
        ]
        if len(outside) > max_outside:
            lines.append(f"  ... and {len(outside) - max_outside} more (verdict.md lists them)")
        if self.missing_tables:
            lines.append(f"Tables of the reference the run lacks: {', '.join(self.missing_tables)}")
        width = max((len(o.status) for o in self.readings), default=0)
        lines += [
            f"  {o.status:<{width}}  {o.reading.label} ({o.reading.table}: delta {_signed(o.delta)}, "
            f"Holm p {_p(o.p_holm)}, MDE {_num(o.mde)}; reference {o.reference_status})"
            for o in self.readings
        ]
        lines.append(self.summary())
        return "\n".join(lines)

    def markdown(self) -> str:
        """The verdict as Markdown (``verdict.md``, and what the commands print)."""
        lines = [
            f"# Verdict: suite `{self.suite}` against `{self.reference_dir}`",
            "",
            f"- Run: `{self.run_dir}`",
            f"- Reference: `{self.reference_dir}` ({self.reason})",
            *_platform_lines("Run platform", self.run_platforms),
            *_platform_lines("Reference platform", self.reference_platforms),
            f"- {_same_platform(self.run_platforms, self.reference_platforms)}",
            "",
            f"## Row means inside the reference's 95% intervals: {self.inside}/{self.total}",
            "",
        ]
        if self.coverage:
            rows = [
                {
                    "table": c.table,
                    "metric": _metric_name(c.metric),
                    "inside": f"{c.inside}/{c.total}",
                    "outside (run mean, reference interval)": "; ".join(
                        f"{o.row} {_num(o.value)} [{_num(o.lo)}, {_num(o.hi)}]" for o in c.outside
                    )
                    + ("; " if c.outside and c.missing else "")
                    + "; ".join(f"{m} not in the run" for m in c.missing),
                }
                for c in self.coverage
            ]
            lines += [pd.DataFrame(rows).to_markdown(index=False), ""]
        if self.missing_tables:
            lines += [f"Tables of the reference the run lacks: {', '.join(self.missing_tables)}.", ""]
        lines += ["## Readings", ""]
        if not self.readings:
            lines += [f"No readings declared ({READINGS_FILE} beside the reference).", ""]
        else:
            rows = [
                {
                    "reading": o.reading.label,
                    "table": o.reading.table,
                    "run": o.status,
                    "delta": _signed(o.delta),
                    "Holm p": _p(o.p_holm),
                    "MDE": _num(o.mde),
                    "reference": o.reference_status,
                }
                for o in self.readings
            ]
            lines += [pd.DataFrame(rows).to_markdown(index=False), ""]
            lines += [
                f"- {o.status}: {o.reading.label}: \u201c{o.reading.sentence}\u201d"
                + (f" ({o.detail})" if o.detail else "")
                for o in self.readings
            ]
            lines.append("")
        lines += [
            "HOLDS: significant after Holm (within its table) in the claimed direction (no-difference: not significant "
            "and |delta| below the table's minimum detectable difference of that metric); FLIPS: significant the other "
            "way (no-difference: significant); NOT SIGNIFICANT: not significant after Holm; INCONCLUSIVE: no-difference "
            "claimed, not significant, but |delta| at or above the MDE; MISSING: no such comparison in the tables.",
            "",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------


def _metric_name(key: str) -> str:
    return {ORDER_KEY: "order acc", "order_changed_share": "reversal changes %"}.get(key, metric_label(key))


def _num(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.1f}"


def _signed(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.1f}"


def _p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _platform_lines(what: str, platforms: list[str]) -> list[str]:
    if not platforms:
        return [f"- {what}: not recorded ({RESULT_FILE} missing or without fingerprints)"]
    return [f"- {what}: {'; '.join(platforms)}"]


def _same_platform(run: list[str], reference: list[str]) -> str:
    if not run or not reference:
        return "Platforms: cannot compare (one is not recorded)."
    if sorted(run) == sorted(reference):
        return "Same platform as the reference: with the same code and settings, its numbers are reproduced exactly."
    return "Different platform from the reference: floats differ, so means move within (or beyond) the intervals."


# ----------------------------------------------------------------------------------------------
# Reading the folders
# ----------------------------------------------------------------------------------------------


def kernel_set() -> str:
    """torch's CPU kernel set in use (``torch.backends.cpu.get_cpu_capability()``, which honours
    ``ATEN_CPU_CAPABILITY``), lower case."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability()).lower()
    except (ImportError, AttributeError):  # pragma: no cover - torch is a dependency
        return os.environ.get("ATEN_CPU_CAPABILITY", "default").strip().lower()


def _holds_tables(folder: Path) -> bool:
    return (folder / "values.csv").is_file() or (folder / READINGS_FILE).is_file()


def choose_reference(
    suite: str,
    reference: str | Path = "reference",
    *,
    kernels: str | None = None,
    kernels_from: str = "as asked",
) -> tuple[Path, str]:
    """The reference folder for ``suite`` and why: ``reference`` is a root of references
    (``<root>/<suite>``, ``<root>/<suite>-avx2``) or one suite's reference folder itself."""
    given = Path(reference)
    if not given.is_dir():
        raise VerdictError(f"reference folder {given} does not exist; pass --reference DIR (e.g. reference/)")
    base, avx2 = given / suite, given / f"{suite}-avx2"
    if not base.is_dir() and not avx2.is_dir():
        if _holds_tables(given):
            return given, "given as the reference folder"
        raise VerdictError(
            f"{given} holds no reference for suite {suite!r}: neither {base} nor {avx2} exists (and {given} itself "
            "holds no values.csv)"
        )
    detected = kernels is None
    kernels = (kernels or kernel_set()).lower()
    how = f"CPU kernel set {kernels} ({'detected' if detected else kernels_from})"
    if kernels == "avx2" and avx2.is_dir():
        return avx2, f"chosen for {how}"
    if base.is_dir():
        note = f"; no {avx2.name} reference" if kernels == "avx2" else ""
        return base, f"chosen for {how}{note}"
    raise VerdictError(
        f"no reference for suite {suite!r} on {how}: {base} does not exist (only {avx2.name}: pass --reference {avx2} "
        "to compare with it anyway)"
    )


def load_readings(path: str | Path) -> list[Reading]:
    """The ``[[readings]]`` of a ``readings.toml`` (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise VerdictError(f"{path}: not valid TOML ({exc})") from exc
    unknown_top = sorted(set(data) - {"readings"})
    if unknown_top:
        raise VerdictError(f"{path}: unknown key {unknown_top[0]!r}; the file holds [[readings]] tables only")
    entries = data.get("readings", [])
    if not isinstance(entries, list):
        raise VerdictError(f"{path}: 'readings' must be an array of tables ([[readings]])")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: readings[{i}]"
        if not isinstance(entry, dict):
            raise VerdictError(f"{where} must be a table")
        unknown = sorted(set(entry) - _READING_KEYS)
        if unknown:
            raise VerdictError(
                f"{where}: unknown key {unknown[0]!r}; a reading has {', '.join(sorted(_READING_KEYS))}"
            )
        for key in ("table", "row", "vs", "metric", "claim"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise VerdictError(f"{where}: {key!r} must be a non-empty string")
        if entry["claim"] == "none":  # the plan's spelling of "no difference"
            entry = {**entry, "claim": "no-difference"}
        if entry["claim"] not in CLAIMS:
            raise VerdictError(f"{where}: claim {entry['claim']!r}: choose one of {', '.join(CLAIMS)}")
        if not (entry["metric"] == ORDER_KEY or is_metric_key(entry["metric"])):
            raise VerdictError(
                f"{where}: metric {entry['metric']!r} is not a metric key (t2v_R1, v2t_MnR, order_acc, ...)"
            )
        if entry["row"] == entry["vs"]:
            raise VerdictError(f"{where}: row and vs are both {entry['row']!r}")
        out.append(Reading(**{k: str(entry.get(k, "")) for k in _READING_KEYS}))
    return out


def _platforms(folder: Path) -> list[str]:
    """The distinct platforms of a results folder's rows (``result.json``), described."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VerdictError(f"{path}: not valid JSON ({exc}); regenerate the tables") from exc
    found: list[str] = []
    for row in data.get("rows", []) if isinstance(data, Mapping) else []:
        fingerprint = row.get("fingerprint") if isinstance(row, Mapping) else None
        platform = fingerprint.get("platform") if isinstance(fingerprint, Mapping) else None
        if isinstance(platform, Mapping):
            text = describe_platform(platform)
            if text not in found:
                found.append(text)
    return found


@dataclass
class _Table:
    """One table's numbers: row means with intervals, and its comparisons."""

    name: str
    means: pd.DataFrame  # row, metric, value, lo, hi
    comparisons: pd.DataFrame  # row, against, metric, value, p_holm, significant, mde


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"row": str, "against": str, "seed": str})
    except (OSError, ValueError) as exc:
        raise VerdictError(f"{path}: cannot be read as CSV ({exc}); regenerate the tables") from exc


def _read_tables(folder: Path) -> dict[str, _Table]:
    """The tables of a results or reference folder: each question table's CSV and ``values.csv``."""
    tables: dict[str, _Table] = {}
    values = folder / "values.csv"
    if values.is_file():
        frame = _read_csv(values)
        mean = frame[frame["seed"].astype(str) == "mean"]
        delta_cols = [c for c in mean.columns if c.startswith("delta_vs_")]
        comparisons = pd.DataFrame(
            columns=["row", "against", "metric", "value", "p_holm", "significant", "mde"]
        )
        if delta_cols:
            against = delta_cols[0][len("delta_vs_") :]
            tested = mean[np.isfinite(pd.to_numeric(mean[delta_cols[0]], errors="coerce"))]
            comparisons = pd.DataFrame(
                {
                    "row": tested["row"],
                    "against": against,
                    "metric": tested["metric"],
                    "value": tested[delta_cols[0]],
                    "p_holm": tested["p_holm"],
                    "significant": tested["significant"].astype(str) == "True",
                    "mde": [minimum_detectable_difference(float(se)) for se in tested["delta_se"]],
                }
            )
        tables[ALL_ROWS] = _Table(ALL_ROWS, mean[["row", "metric", "value", "lo", "hi"]], comparisons)
    for path in sorted(folder.glob("*.csv")):
        if path.name in _SKIPPED_CSV:
            continue
        frame = _read_csv(path)
        if not _QUESTION_COLUMNS <= set(frame.columns):
            continue
        comparisons = frame[frame["line"] == "comparison"].copy()
        comparisons["significant"] = comparisons["significant"].astype(str) == "True"
        tables[path.stem] = _Table(
            path.stem,
            frame[frame["line"] == "mean"][["row", "metric", "value", "lo", "hi"]],
            comparisons[["row", "against", "metric", "value", "p_holm", "significant", "mde"]],
        )
    return tables


# ----------------------------------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------------------------------


def _coverage(run: _Table, reference: _Table) -> list[Coverage]:
    out = []
    run_means = {
        (r, m): float(v)
        for r, m, v in zip(run.means["row"], run.means["metric"], run.means["value"], strict=True)
    }
    for metric in dict.fromkeys(reference.means["metric"]):
        ref = reference.means[reference.means["metric"] == metric]
        cov = Coverage(reference.name, str(metric), 0, 0)
        for row, lo, hi in zip(ref["row"], ref["lo"], ref["hi"], strict=True):
            lo, hi = float(lo), float(hi)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                continue  # no interval (a per-seed scalar of one seed)
            value = run_means.get((row, metric))
            if value is None or not np.isfinite(value):
                cov.missing.append(str(row))
                continue
            cov.total += 1
            if lo <= value <= hi:
                cov.inside += 1
            else:
                cov.outside.append(Outside(str(row), value, lo, hi))
        if cov.total or cov.missing:
            out.append(cov)
    return out


def _assess(reading: Reading, table: _Table | None) -> tuple[str, float, float, float, str]:
    """(status, delta as row minus vs, Holm p, MDE of the metric, detail) of ``reading`` in ``table``."""
    if table is None:
        return MISSING, np.nan, np.nan, np.nan, f"no table {reading.table!r}"
    c = table.comparisons
    c = c[c["metric"] == reading.metric]
    sign = 1.0
    line = c[(c["row"] == reading.row) & (c["against"] == reading.vs)]
    if line.empty:
        line, sign = c[(c["row"] == reading.vs) & (c["against"] == reading.row)], -1.0
    if line.empty:
        pairs = (
            ", ".join(sorted({f"{a} - {b}" for a, b in zip(c["row"], c["against"], strict=True)})) or "none"
        )
        return (
            MISSING,
            np.nan,
            np.nan,
            np.nan,
            f"table {reading.table!r} has no comparison {reading.row} - {reading.vs} (its comparisons: {pairs})",
        )
    first = line.iloc[0]
    delta, p_holm, significant = (
        sign * float(first["value"]),
        float(first["p_holm"]),
        bool(first["significant"]),
    )
    mdes = pd.to_numeric(c["mde"], errors="coerce")
    mde = float(mdes.max()) if mdes.notna().any() else float("nan")
    if reading.claim == "no-difference":
        if significant:
            return FLIPS, delta, p_holm, mde, "a significant difference"
        if np.isfinite(mde) and abs(delta) < mde:
            return HOLDS, delta, p_holm, mde, ""
        return INCONCLUSIVE, delta, p_holm, mde, "not significant, but |delta| is not below the MDE"
    wanted = 1.0 if reading.claim == "higher" else -1.0
    if not significant or delta == 0.0:
        return NOT_SIGNIFICANT, delta, p_holm, mde, ""
    return (HOLDS if np.sign(delta) == wanted else FLIPS), delta, p_holm, mde, ""


def compare_folders(
    run_dir: str | Path,
    reference_dir: str | Path,
    *,
    suite: str | None = None,
    reason: str = "given",
    readings: Sequence[Reading] | None = None,
) -> Verdict:
    """The verdict of the results folder ``run_dir`` against ``reference_dir`` (readings from
    ``readings``, else the reference's ``readings.toml``)."""
    run_dir, reference_dir = Path(run_dir), Path(reference_dir)
    if not run_dir.is_dir():
        raise VerdictError(
            f"results folder {run_dir} does not exist; run the suite or `clip2video tables` first"
        )
    run_tables, ref_tables = _read_tables(run_dir), _read_tables(reference_dir)
    if not ref_tables:
        raise VerdictError(
            f"{reference_dir} holds no tables (values.csv, <table>.csv); regenerate the reference"
        )
    if readings is None:
        readings = load_readings(reference_dir / READINGS_FILE)
    coverage: list[Coverage] = []
    missing_tables = []
    for name, ref in ref_tables.items():
        if name not in run_tables:
            missing_tables.append(name)
            continue
        coverage += _coverage(run_tables[name], ref)
    outcomes = []
    for reading in readings:
        status, delta, p_holm, mde, detail = _assess(reading, run_tables.get(reading.table))
        ref_status = _assess(reading, ref_tables.get(reading.table))[0]
        outcomes.append(ReadingOutcome(reading, status, delta, p_holm, mde, ref_status, detail))
    return Verdict(
        suite=suite or run_dir.name,
        run_dir=run_dir,
        reference_dir=reference_dir,
        reason=reason,
        run_platforms=_platforms(run_dir),
        reference_platforms=_platforms(reference_dir),
        coverage=coverage,
        readings=outcomes,
        missing_tables=missing_tables,
    )


def suite_verdict(
    results_dir: str | Path,
    suite: str,
    reference: str | Path = "reference",
    *,
    kernels: str | None = None,
) -> Verdict:
    """``results_dir/<suite>`` against the reference chosen for this machine's kernel set (readings:
    the chosen folder's ``readings.toml``, else ``<root>/<suite>/readings.toml``)."""
    recorded = None if kernels else _recorded_kernel_set(Path(results_dir) / suite)
    chosen, reason = choose_reference(
        suite,
        reference,
        kernels=kernels or recorded,
        kernels_from="the run's records" if recorded else "as asked",
    )
    readings = load_readings(_readings_path(chosen, reference, suite))
    return compare_folders(Path(results_dir) / suite, chosen, suite=suite, reason=reason, readings=readings)


def _recorded_kernel_set(run_dir: Path) -> str | None:
    """The CPU kernel set the run's rows recorded (``result.json``), when they agree; else None."""
    try:
        rows = json.loads((run_dir / RESULT_FILE).read_text()).get("rows") or []
        found = {
            str(row["fingerprint"]["platform"]["cpu_capability"]).lower()
            for row in rows
            if row.get("fingerprint", {}).get("platform", {}).get("device", "cpu") == "cpu"
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return found.pop() if len(found) == 1 else None


def _readings_path(chosen: Path, reference: str | Path, suite: str) -> Path:
    """The chosen folder's ``readings.toml``, else the base reference's (``<root>/<suite>/``)."""
    path = chosen / READINGS_FILE
    if not path.is_file() and (Path(reference) / suite / READINGS_FILE).is_file():
        return Path(reference) / suite / READINGS_FILE
    return path


def check_reference(suite: str | None, reference: str | Path, *, kernels: str | None = None) -> Path | None:
    """Before work: the reference folder exists, one is found for ``suite`` (when named) and its
    readings parse; returns the chosen folder (None without a suite)."""
    if not Path(reference).is_dir():
        raise VerdictError(
            f"reference folder {reference} does not exist; pass --reference DIR (e.g. reference/)"
        )
    if suite is None:
        return None
    chosen, _ = choose_reference(suite, reference, kernels=kernels)
    load_readings(_readings_path(chosen, reference, suite))
    return chosen


def write_verdict(verdict: Verdict, path: str | Path | None = None) -> Path:
    """``verdict.md`` in the run's results folder (or ``path``), atomically."""
    return atomic_write_text(path or verdict.run_dir / VERDICT_FILE, verdict.markdown())


def verdict_after_tables(
    results_dir: str | Path,
    suite: str,
    reference: str | Path = "reference",
    *,
    kernels: str | None = None,
    echo: Callable[[str], Any] = print,
) -> Verdict | None:
    """What the pipeline calls after the tables: the verdict against the shipped reference, written
    to ``results/<suite>/verdict.md`` and printed; None (and one line saying so) when no reference
    exists for the suite."""
    root = Path(reference)
    if not any(p.is_dir() for p in (root / suite, root / f"{suite}-avx2")) and not _holds_tables(root):
        echo(f"clip2video: no reference for suite {suite!r} under {root}/: no verdict")
        return None
    verdict = suite_verdict(results_dir, suite, reference, kernels=kernels)
    path = write_verdict(verdict)
    echo(f"{verdict.terminal()}\nverdict: {path}")
    return verdict


__all__ = [
    "ALL_ROWS",
    "CLAIMS",
    "FLIPS",
    "HOLDS",
    "INCONCLUSIVE",
    "MISSING",
    "NOT_SIGNIFICANT",
    "READINGS_FILE",
    "RESULT_FILE",
    "VERDICT_FILE",
    "Coverage",
    "Outside",
    "Reading",
    "ReadingOutcome",
    "Verdict",
    "VerdictError",
    "check_reference",
    "choose_reference",
    "compare_folders",
    "kernel_set",
    "load_readings",
    "suite_verdict",
    "verdict_after_tables",
    "write_verdict",
]
