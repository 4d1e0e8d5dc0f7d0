"""Training drift: compare a suite's trained metrics with a locked baseline (``baselines/locked/<suite>.json``).

This is the training layer of the drift gate; ``eval_drift`` is the strict evaluation layer.

The rule (``mode="auto"``, the default):
- ``exact`` when the lock's platform fingerprint equals the run's (CPU model, torch's CPU
  capability, torch/numpy/open_clip/python versions, threads, device) and the device is the CPU:
  every locked metric must equal the new value (|new - locked| <= 1e-9).
- ``tolerance`` otherwise (another CPU kernel set, thread count, version or a GPU): a metric drifts
  when ``|new - locked| > tol``, where the lock stores ``tol`` per model and metric, derived at lock
  time from the spread over seeds: ``tol = max(3 x std over seeds 0, 1, 2, floor)``, with the
  floor one query's share for recalls and order accuracy (``100 / t2v queries``: one caption) and 1.0 for the
  ranks (MdR, MnR) and tie counts. A metric without a stored tolerance is compared exactly.
- ``interval`` (explicit only, kept for old locks): the new value must lie in the locked 95%
  bootstrap interval.
A model or metric in the baseline that the new run lacks, or a model or metric the baseline lacks
(a newly added metric: relock), is drift.
A failure names the settings that differ from the lock's (``train.batch_size: 16 -> 8``), then each
metric with its locked value, new value and tolerance, and both fingerprints, and ends with the
command that relocks: the command as it was typed, plus ``--update --message "why"``.
Relocking is explicit: ``clip2video drift --update --message "why"`` stores the message, the date,
the git commit, the command, the platform fingerprint, the suite's resolved settings
(``Settings.to_dict()``, lock version 3; older locks hold none) and the tolerances in the baseline
file. The suite runs themselves (``--rerun``, the seed spread) are the experiments layer's
(:mod:`clip2video.experiments.drift_runs`); this module only reads records.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip2video.engine.records import RunRecord
from clip2video.errors import DriftError, OutputError
from clip2video.fileio import atomic_write_text, safe_name
from clip2video.fingerprint import differences
from clip2video.metrics.bootstrap import bootstrap_ci
from clip2video.metrics.definitions import find_metric
from clip2video.report.groups import recall_ks_of, row_name

EXACT_TOLERANCE = 1e-9
MODES = ("exact", "tolerance", "interval")
LOCK_VERSION = 3  # 3: the suite's resolved settings; 2 (still read): none
TOLERANCE_K = 3.0
TOLERANCE_SEEDS = (0, 1, 2)
# Fingerprint keys that must agree for the exact rule (the CPU model, kernel set, versions, threads, device).
PLATFORM_KEYS = ("cpu_model", "cpu_capability", "torch", "numpy", "open_clip", "python", "threads", "device")


@dataclass(frozen=True)
class Drift:
    """One metric that moved (or is missing): the locked and new values and the tolerance applied."""

    model: str
    metric: str
    locked: float | None
    new: float | None
    tolerance: str

    def __str__(self) -> str:
        locked = "absent" if self.locked is None else repr(self.locked)
        new = "absent" if self.new is None else repr(self.new)
        return f"{self.model}/{self.metric}: locked {locked}, new {new}, tolerance {self.tolerance}"


def _models(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"models": {...}}`` (a baseline file) or the models mapping itself."""
    models = data.get("models", data)
    if not isinstance(models, dict):
        raise DriftError("metrics must be {model: {'metrics': {...}, 'intervals': {...}}}")
    return models


def compare(locked: dict[str, Any], new: dict[str, Any], *, mode: str = "exact") -> list[Drift]:
    """Every locked metric that moved beyond the mode's tolerance, or is missing, in ``new``."""
    if mode not in MODES:
        raise DriftError(f"drift mode {mode!r}: expected one of {', '.join(MODES)}")
    old_models, new_models = _models(locked), _models(new)
    drifts: list[Drift] = []
    for model, old in old_models.items():
        if model not in new_models:
            drifts.append(Drift(model, "(model)", None, None, "model missing from the new run"))
            continue
        new_metrics = new_models[model].get("metrics", {})
        intervals = old.get("intervals", {})
        for metric, raw in old.get("metrics", {}).items():
            value = float(raw)
            if metric not in new_metrics:
                drifts.append(Drift(model, metric, value, None, "metric missing from the new run"))
                continue
            got = float(new_metrics[metric])
            tolerances = old.get("tolerances", {})
            if mode == "tolerance" and metric in tolerances:
                allowed = float(tolerances[metric])
                if not abs(got - value) <= allowed:
                    drifts.append(
                        Drift(model, metric, value, got, f"|new - locked| <= {allowed:g} (seed spread)")
                    )
            elif mode != "interval" or metric not in intervals:
                if mode == "interval":
                    continue
                tol = f"exact (|new - locked| <= {EXACT_TOLERANCE:g})"
                if not (abs(got - value) <= EXACT_TOLERANCE) and not (math.isnan(got) and math.isnan(value)):
                    drifts.append(Drift(model, metric, value, got, tol))
            else:
                lo, hi = (float(x) for x in intervals[metric])
                if not lo <= got <= hi:
                    drifts.append(Drift(model, metric, value, got, f"locked 95% interval [{lo:g}, {hi:g}]"))
        for metric, raw in new_metrics.items():  # a metric the lock does not hold (a new one) is drift
            if metric not in old.get("metrics", {}):
                drifts.append(
                    Drift(model, metric, None, float(raw), "metric not in the baseline: relock with --update")
                )
    for model in new_models:
        if model not in old_models:
            drifts.append(
                Drift(model, "(model)", None, None, "model not in the baseline: relock with --update")
            )
    return drifts


def record_metrics(rec: RunRecord) -> dict[str, float]:
    """A row's locked metrics: the retrieval metrics plus ``order_acc`` when the row has one."""
    metrics = {k: float(v) for k, v in rec.metrics.items()}
    if "order_acc" in rec.extra:
        metrics["order_acc"] = float(rec.extra["order_acc"])
    return metrics


def suite_metrics(
    records: list[RunRecord], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """``{row: {"metrics": {...}, "intervals": {...}}}`` from a suite's records (order_acc included)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        metrics = record_metrics(rec)
        ci = bootstrap_ci(rec, n_boot=n_boot, seed=seed, recall_ks=recall_ks_of(rec))
        out[rec.name] = {"metrics": metrics, "intervals": {k: list(v) for k, v in ci.items()}}
    return out


def record_platform(records: list[RunRecord]) -> dict[str, Any] | None:
    """The platform fingerprint the records carry (``RunRecord.fingerprint["platform"]``), if any."""
    for rec in records:
        fp = getattr(rec, "fingerprint", None) or rec.extra.get("fingerprint")
        if isinstance(fp, dict) and isinstance(fp.get("platform"), dict):
            return fp["platform"]
    return None


def same_platform(locked: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether two platform fingerprints agree on every key of ``PLATFORM_KEYS``."""
    if not locked or not new:
        return False
    return all(locked.get(k) == new.get(k) for k in PLATFORM_KEYS)


def default_mode(locked: dict[str, Any] | None, new_platform: dict[str, Any] | None) -> str:
    """The rule: ``exact`` on the lock's own CPU platform, ``tolerance`` anywhere else."""
    platform = (locked or {}).get("fingerprint")
    device = str((new_platform or {}).get("device", "cpu"))
    if device.startswith("cpu") and same_platform(platform, new_platform):
        return "exact"
    return "tolerance"


def seed_tolerances(
    by_model: dict[str, list[dict[str, float]]], query_counts: dict[str, int], k: float = TOLERANCE_K
) -> dict[str, dict[str, float]]:
    """``{model: {metric: max(k x std over seeds, floor)}}`` from each model's metrics, one dict per seed.

    ``query_counts[model]`` is its number of t2v queries (the floor of recalls and order accuracy
    is one caption's share, ``100 / t2v queries``); ranks and tie counts have the floor 1.0.
    """
    import numpy as np

    out: dict[str, dict[str, float]] = {}
    for model, runs in sorted(by_model.items()):
        tol: dict[str, float] = {}
        for key in sorted(set().union(*(set(r) for r in runs))):
            values = np.array([float(r[key]) for r in runs if key in r], dtype=np.float64)
            spread = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
            tol[key] = max(k * spread, _floor(key, query_counts.get(model)))
        out[model] = tol
    return out


def tolerance_rule(k: float = TOLERANCE_K, seeds: tuple[int, ...] = TOLERANCE_SEEDS) -> str:
    """The tolerance rule in words, as stored in a lock."""
    return (
        f"exact (1e-9) when the platform fingerprint matches on the CPU; otherwise |new - locked| <= "
        f"max({k:g} x std over seeds {', '.join(map(str, seeds))}, floor), floor = 100/(t2v queries) for "
        "recalls and order_acc, 1.0 for MdR, MnR and tie counts"
    )


def _floor(metric: str, queries: int | None) -> float:
    """One query's share for percentages (recalls, registered percent metrics, order_acc), 1.0 for
    ranks and counts (the metric's definition says which)."""
    found = find_metric(metric)
    if found is not None and found[1].unit != "percent":
        return 1.0
    return 100.0 / queries if queries else 1.0


def missing_lock_where(path: Path) -> str:
    """Where a missing lock was looked for: a relative path also names the working directory it
    was resolved from, and the repository's own locks (``--baselines`` is relative to it)."""
    if path.is_absolute():
        return str(path)
    return (
        f"{path} (under the working directory {Path.cwd()}; the project's locks are in its "
        "baselines/locked: run from the repository root or pass --baselines DIR)"
    )


def load_locked(path: str | Path) -> dict[str, Any]:
    """A locked baseline file."""
    path = Path(path)
    if not path.is_file():
        raise DriftError(
            f"no locked baseline at {missing_lock_where(path)}: run the suite, then lock it with "
            f'`clip2video drift --suite <name> --update --message "why"`'
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DriftError(f"{path} is not valid JSON ({exc}); relock it with --update") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise DriftError(f"{path} has no 'models' mapping; relock it with --update")
    return data


def git_commit() -> str | None:
    """The checked-out commit of the working directory's repository (None outside one)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_locked(
    path: str | Path,
    metrics: dict[str, dict[str, Any]],
    message: str,
    *,
    suite: str = "",
    mode: str = "auto",
    command: str | None = None,
    n_boot: int | None = None,
    fingerprint: dict[str, Any] | None = None,
    tolerances: dict[str, dict[str, float]] | None = None,
    tolerance_rule: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Lock ``metrics`` (``suite_metrics`` output) with the reason; stores date, commit, command
    and the suite's resolved ``settings`` (``Settings.to_dict()``)."""
    if not message or not message.strip():
        raise DriftError('relocking a baseline needs a message saying why (--message "...")')
    path = Path(path)
    models = {name: dict(entry) for name, entry in metrics.items()}
    for name, tol in (tolerances or {}).items():
        if name in models:
            models[name]["tolerances"] = tol
    data = {
        "version": LOCK_VERSION,
        "suite": suite,
        "message": message.strip(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command if command is not None else " ".join(["clip2video", *sys.argv[1:]]),
        "mode": mode,
        "n_boot": n_boot,
        "fingerprint": fingerprint,
        "tolerance_rule": tolerance_rule,
        "settings": settings,
        "models": models,
    }
    if suite:
        safe_name(suite, "suite name")
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")  # the old lock survives a failed write
    except OutputError as exc:
        raise DriftError(f"cannot write the baseline {str(exc).removeprefix('cannot write ')}") from exc
    return path


# ----------------------------------------------------------------------------- tolerances


def record_queries(record: RunRecord) -> int:
    """A record's number of t2v queries (captions)."""
    return len(record.ranks_t2v)


def _row_key(record: RunRecord) -> str:
    """A row's seeds share this key: its name without seed, and its post-processing."""
    post = getattr(record, "postprocess", None) or ""
    return f"{row_name(record)}+{post}" if post else row_name(record)


def lock_tolerances(records: list[RunRecord], spread: list[RunRecord]) -> dict[str, dict[str, float]]:
    """``{locked entry: {metric: tolerance}}``: each record of ``records`` (the run being locked,
    keyed by its record name) gets the tolerances of its row, from the spread of that row's
    records in ``spread`` (one per seed; :func:`seed_tolerances`)."""
    by_row: dict[str, list[dict[str, float]]] = {}
    queries: dict[str, int] = {}
    for rec in spread:
        key = _row_key(rec)
        by_row.setdefault(key, []).append(record_metrics(rec))
        queries[key] = record_queries(rec)
    tolerances = seed_tolerances(by_row, queries)
    return {rec.name: tolerances[_row_key(rec)] for rec in records if _row_key(rec) in tolerances}


# ----------------------------------------------------------------------------- messages


def settings_line(locked: dict[str, Any], settings: dict[str, Any] | None) -> str:
    """The settings that differ from the lock's (``train.batch_size: 16 -> 8``), in one line."""
    old = locked.get("settings")
    if not isinstance(old, dict):
        return "  settings: the lock holds no settings (locked before version 3; relock to store them)"
    if settings is None:
        return "  settings: unknown for this run"
    changed = differences(old, settings)
    return f"  settings (locked -> now): {'; '.join(changed) if changed else 'identical'}"


def locked_line(path: Path, metrics: dict[str, Any], suite: str, message: str) -> str:
    """What ``--update`` prints after writing the lock."""
    return f"drift[train]: locked {len(metrics)} models of suite {suite!r} in {path} ({message.strip()})"


def report_lines(
    path: Path,
    locked: dict[str, Any],
    new: dict[str, Any],
    drifts: list[Drift],
    *,
    suite: str,
    mode: str,
    platform: dict[str, Any] | None,
    settings: dict[str, Any] | None,
) -> list[str]:
    """The layer's verdict: one line when it matches; else a header, the settings that differ, every
    moved metric and both platform fingerprints."""
    if not drifts:
        checked = sum(len(m.get("metrics", {})) for m in locked["models"].values())
        return [
            f"drift[train]: suite {suite!r} matches {path}: {len(new)} models, {checked} locked metrics, "
            f"{mode} mode (locked {locked.get('date', '?')}: {locked.get('message', '')})"
        ]
    lines = [f"drift[train]: {len(drifts)} metric(s) of suite {suite!r} moved from {path} ({mode} mode):"]
    lines.append(settings_line(locked, settings))
    lines += [f"  {drift}" for drift in drifts]
    lines.append(f"  locked platform: {locked.get('fingerprint')}")
    lines.append(f"  this platform:   {platform}")
    diff = differences(locked.get("fingerprint"), platform)
    lines.append(f"  platform differences: {'; '.join(diff) if diff else 'none'}")
    return lines


# Flags of the drift verb that the relock command drops (it adds its own), with whether they take a value.
_RELOCK_DROPS = {"--update": False, "--message": True}


def relock_command(argv: Sequence[str], moved_layers: Iterable[str], layer: str = "both") -> str:
    """The command that relocks what moved: ``argv`` (the command line as typed, after
    ``clip2video``: ``--import``, ``--baselines``, ``--suite`` as a path, ``--set`` ... all kept)
    less any ``--update`` / ``--message``, with ``--layer`` narrowed to the one layer that moved
    when ``layer`` was both, plus ``--update --message "why"``."""
    moved = list(dict.fromkeys(moved_layers))
    narrow = layer == "both" and len(moved) == 1
    drops = {**_RELOCK_DROPS, **({"--layer": True} if narrow else {})}
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in drops:
            skip = drops[flag] and "=" not in arg
            continue
        kept.append(arg)
    if not kept:
        kept = ["drift"]
    if narrow:
        kept += ["--layer", moved[0]]
    return shlex.join(["clip2video", *kept]) + ' --update --message "why"'
