"""Evaluation drift, the strict layer of the drift gate: its lock, the comparison and the messages.

What is locked (``baselines/locked/eval-<suite>.json``): for each registered model of the suite,
the metrics and the similarity matrix of a fixed tiny checkpoint regenerated from a seed and
evaluated on fixed generated synthetic data, with the layer's settings, each model's weight seed
and the platform. The numbers are computed by the experiments layer
(:func:`clip2video.experiments.drift_runs.run_eval_layer`: it builds and evaluates the models);
this module never holds a live model. It reads and writes locks, compares and words the result.

The rule. Each similarity matrix must match the lock entrywise within
``|new - locked| <= 1e-5 * max(|locked|, 1)`` (relative 1e-5; absolute 1e-5 for entries below 1),
and each metric (the engine's retrieval metrics and the twin order accuracy) must equal the
locked value exactly. The layer is expected to pass under any CPU kernel set
(``ATEN_CPU_CAPABILITY=avx2``, ``avx512``, ``default``) and thread count: the models are tiny and
untrained, so rounding differences stay far below 1e-5 and never reorder a ranking. It fails
when a model formula, the frame sampler, the tokenizer or the ranking core changes.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clip2video.errors import DriftError, OutputError
from clip2video.fileio import atomic_write_text, safe_name
from clip2video.fingerprint import differences, digest
from clip2video.report.drift import git_commit, missing_lock_where

EVAL_LOCK_VERSION = 1
SIM_RTOL = 1e-5


_ROW = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")  # a list of numbers: one line in the lock file


EvalDriftError = DriftError  # the evaluation layer's errors are the gate's (its old name)


class ModelNumbers(Protocol):
    """One model's evaluation-drift numbers (``drift_runs.ModelEval``)."""

    metrics: dict[str, float]
    sim: np.ndarray


class EvalNumbers(Protocol):
    """The evaluation-drift numbers of a suite (``drift_runs.EvalRun``): the layer's settings
    (with each model's weight seed), each model's numbers and the platform they came from."""

    settings: dict[str, Any]
    models: Mapping[str, ModelNumbers]
    fingerprint: dict[str, Any]


# ----------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class EvalDrift:
    """One model's metric or similarity matrix that moved."""

    model: str
    what: str
    locked: Any
    new: Any
    tolerance: str

    def __str__(self) -> str:
        return (
            f"eval {self.model}/{self.what}: locked {self.locked}, new {self.new}, tolerance {self.tolerance}"
        )


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_eval(locked: dict[str, Any], run: EvalNumbers) -> list[EvalDrift]:
    """Every locked metric that is not exactly equal, and every similarity matrix outside 1e-5."""
    drifts: list[EvalDrift] = []
    if locked.get("settings") != run.settings:
        changed = "; ".join(differences(locked.get("settings"), run.settings)[:6])
        drifts.append(EvalDrift("(all)", "settings", "", "", f"the layer's settings differ: {changed}"))
    for model, old in locked["models"].items():
        new = run.models.get(model)
        if new is None:
            drifts.append(EvalDrift(model, "(model)", "present", "absent", "every locked model must run"))
            continue
        for key, raw in old["metrics"].items():
            value = float(raw)
            if key not in new.metrics:
                drifts.append(EvalDrift(model, key, repr(value), "absent", "exact"))
            elif not _same(value, new.metrics[key]):
                drifts.append(EvalDrift(model, key, repr(value), repr(new.metrics[key]), "exact"))
        for key, got in new.metrics.items():  # a metric the lock does not hold (a new one) is drift
            if key not in old["metrics"]:
                drifts.append(
                    EvalDrift(model, key, "absent", repr(got), "not in the lock: relock with --update")
                )
        old_sim = np.asarray(old["sim"], dtype=np.float64)
        new_sim = new.sim.astype(np.float64)
        if old_sim.shape != new_sim.shape:
            drifts.append(
                EvalDrift(model, "sim", f"shape {old_sim.shape}", f"shape {new_sim.shape}", "same shape")
            )
            continue
        excess = np.abs(new_sim - old_sim) / np.maximum(np.abs(old_sim), 1.0)
        if not bool(np.all(excess <= SIM_RTOL)):
            i, j = np.unravel_index(
                int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess))), excess.shape
            )
            bad = int(np.count_nonzero(~(excess <= SIM_RTOL)))
            drifts.append(
                EvalDrift(
                    model,
                    f"sim[{i},{j}] ({bad} of {excess.size} entries moved)",
                    repr(float(old_sim[i, j])),
                    repr(float(new_sim[i, j])),
                    f"|new - locked| <= {SIM_RTOL:g} * max(|locked|, 1)",
                )
            )
    for model in run.models:
        if model not in locked["models"]:
            drifts.append(EvalDrift(model, "(model)", "absent", "present", "relock with --update"))
    return drifts


# ----------------------------------------------------------------------------- lock files


def eval_lock_path(baselines: str | Path, suite: str) -> Path:
    """``<baselines>/eval-<suite>.json`` (the suite name must be a safe name: it names the file)."""
    return Path(baselines) / f"eval-{safe_name(suite, 'suite name')}.json"


def load_eval_lock(path: str | Path) -> dict[str, Any]:
    """An evaluation-drift lock; a missing or malformed file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise DriftError(
            f"no evaluation-drift lock at {missing_lock_where(path)}: create it with "
            '`clip2video drift --layer eval --suite <name> --update --message "why"`'
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DriftError(f"{path} is not a valid JSON lock ({exc}); relock it with --update") from exc
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not all(
        isinstance(m, dict) and isinstance(m.get("metrics"), dict) and isinstance(m.get("sim"), list)
        for m in models.values()
    ):
        raise DriftError(
            f"{path} is not an evaluation-drift lock (models -> metrics, sim); relock with --update"
        )
    return data


def write_eval_lock(path: str | Path, run: EvalNumbers, *, message: str, suite: str, command: str) -> Path:
    """Lock ``run``: settings, platform fingerprint, metrics and similarity matrices (float32 values),
    with the message, the date, the git commit and the command."""
    path = Path(path)
    data = {
        "version": EVAL_LOCK_VERSION,
        "layer": "eval",
        "suite": suite,
        "message": message.strip(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command,
        "rule": f"metrics exact; similarity |new - locked| <= {SIM_RTOL:g} * max(|locked|, 1)",
        "settings": run.settings,
        "settings_digest": digest(run.settings),
        "fingerprint": run.fingerprint,
        "models": {
            name: {"metrics": m.metrics, "sim": [[float(x) for x in row] for row in m.sim.astype(np.float32)]}
            for name, m in run.models.items()
        },
    }
    text = _ROW.sub(
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", json.dumps(data, indent=1)
    )
    text += "\n"
    try:
        atomic_write_text(path, text)  # the old lock survives a failed write
    except OutputError as exc:
        raise DriftError(f"cannot write the lock {str(exc).removeprefix('cannot write ')}") from exc
    return path


# ----------------------------------------------------------------------------- messages


def _where(fingerprint: Mapping[str, Any]) -> str:
    return f"cpu_capability={fingerprint.get('cpu_capability')}, threads={fingerprint.get('threads')}"


def locked_line(path: Path, run: EvalNumbers, suite: str) -> str:
    """What ``--update`` prints after writing the lock."""
    return f"drift[eval]: locked {len(run.models)} models of suite {suite!r} in {path}"


def report_lines(
    path: Path, locked: dict[str, Any], run: EvalNumbers, drifts: list[EvalDrift], suite: str
) -> list[str]:
    """The layer's verdict: one line when it matches; else a header, every drift (a settings
    difference first) and the platform differences."""
    where = _where(run.fingerprint)
    if not drifts:
        checked = sum(len(m["metrics"]) for m in locked["models"].values())
        return [
            f"drift[eval]: suite {suite!r} matches {path}: {len(run.models)} models, {checked} metrics exact, "
            f"similarities within {SIM_RTOL:g} ({where})"
        ]
    lines = [f"drift[eval]: {len(drifts)} change(s) of suite {suite!r} against {path} ({where}):"]
    lines += [f"  {drift}" for drift in drifts]
    platform = differences(locked.get("fingerprint"), run.fingerprint)
    lines.append(f"  platform (locked -> now): {'; '.join(platform) if platform else 'identical'}")
    return lines
