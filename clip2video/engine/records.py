"""The on-disk record of a suite run: what the runner writes and what tables, plots and drift read.

Layout (one folder per suite, one per row)::

    runs/<suite>/suite.json             suite name, protocol, row order, notes (footnotes)
    runs/<suite>/<row>/metrics.json     metrics + tie policy + protocol + extras (order_acc, legacy, ...)
    runs/<suite>/<row>/ranks.npz        t2v, v2t per-query ranks (float64) and tied_t2v, tied_v2t flags
    runs/<suite>/<row>/sim.npz          the similarity matrix, compressed (optional)
    runs/<suite>/<row>/config.json      the fully resolved config of the row

Known extra keys in ``metrics.json`` (all optional): ``order_acc``, ``selected_on_test`` (bool),
``postprocess`` (e.g. ``"dsl"`` or ``"qbnorm:train-captions"``), ``dropped`` (``{"videos": n,
"captions": m, "ids": [...]}``), ``legacy`` (the metrics under the ``legacy`` tie policy), ``device``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip2video.errors import Clip2VideoError
from clip2video.metrics import RECALL_KS, recall_hits

COUNT_KEYS = ("t2v_higher", "t2v_equal", "v2t_higher", "v2t_equal")

SUITE_FILE = "suite.json"
METRICS_FILE = "metrics.json"
RANKS_FILE = "ranks.npz"
SIM_FILE = "sim.npz"
CONFIG_FILE = "config.json"
RECORD_VERSION = 1
_ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class RecordError(Clip2VideoError):
    """A run record is missing or malformed."""


@dataclass
class RunRecord:
    """One row of a suite: a model's final metrics and per-query ranks."""

    name: str
    metrics: dict[str, float]
    ranks_t2v: np.ndarray
    ranks_v2t: np.ndarray
    tie_policy: str = "pessimistic"
    protocol: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    tied_t2v: np.ndarray | None = None
    tied_v2t: np.ndarray | None = None
    path: Path | None = None
    # Per-query contributions to R@1/5/10 ([queries, 3], see QueryRanks.hits): fractional under the
    # `mean` tie policy, so recall intervals cannot be derived from the ranks alone.
    hits_t2v: np.ndarray | None = None
    hits_v2t: np.ndarray | None = None
    # Candidates scoring above / equal to each query's ground truth (QueryRanks counts), or None.
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def recall_curve(self, direction: str, ks: np.ndarray) -> np.ndarray:
        """``R@K`` (percent) of ``direction`` for every K in ``ks``, by the record's tie policy."""
        ranks = self.ranks_t2v if direction == "t2v" else self.ranks_v2t
        higher, equal = self.counts.get(f"{direction}_higher"), self.counts.get(f"{direction}_equal")
        ks = np.asarray(ks)[:, None]
        if higher is None or equal is None:
            return 100.0 * np.mean(ranks[None, :] <= ks, axis=1)
        fractional = self.tie_policy == "mean"
        return 100.0 * np.mean(recall_hits(ranks[None, :], higher, equal, ks, fractional=fractional), axis=1)

    @property
    def postprocess(self) -> str | None:
        """The post-processing of a marked row (``dsl``, ``qbnorm:<bank>``), or None for a plain row."""
        value = self.extra.get("postprocess")
        return str(value) if value else None

    @property
    def legacy(self) -> dict[str, float] | None:
        """Metrics under the ``legacy`` tie policy, where the runner computed them."""
        value = self.extra.get("legacy")
        return dict(value) if value else None

    @property
    def sim_path(self) -> Path | None:
        """The compressed similarity matrix, where one was recorded."""
        if self.path is None:
            return None
        path = self.path / SIM_FILE
        return path if path.is_file() else None

    def load_sim(self) -> np.ndarray:
        """The recorded similarity matrix (``[num_captions, num_videos]``)."""
        path = self.sim_path
        if path is None:
            raise RecordError(f"run {self.name!r} ({self.path}) has no {SIM_FILE}; rerun the suite with sims")
        with np.load(path) as data:
            return data["sim"]


@dataclass
class SuiteInfo:
    """``suite.json``: the suite's name, protocol, row order and footnotes."""

    suite: str
    protocol: str = ""
    rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dump(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)


def _load(path: Path) -> Any:
    if not path.is_file():
        raise RecordError(f"{path} is missing: rerun the suite (clip2video ablation --suite ...)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path} is not valid JSON ({exc}); rerun the suite to rewrite it") from exc


def write_run_record(
    directory: str | Path,
    *,
    name: str,
    metrics: dict[str, float],
    ranks: Any = None,
    ranks_t2v: np.ndarray | None = None,
    ranks_v2t: np.ndarray | None = None,
    tie_policy: str = "pessimistic",
    protocol: str = "",
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    tied_t2v: np.ndarray | None = None,
    tied_v2t: np.ndarray | None = None,
    sim: np.ndarray | None = None,
) -> Path:
    """Write one row's record into ``directory`` (created) and return the folder.

    ``ranks`` may be a ``clip2video.metrics.QueryRanks`` (its ``t2v``, ``v2t``, ``t2v_tied``,
    ``v2t_tied`` are taken); otherwise pass ``ranks_t2v`` / ``ranks_v2t`` (and the tied flags).
    """
    hits: dict[str, np.ndarray] = {}
    if ranks is not None and hasattr(ranks, "hits"):
        for direction in ("t2v", "v2t"):
            hits[f"hits_{direction}"] = np.stack([ranks.hits(direction, k) for k in RECALL_KS], axis=1)
            for count in ("higher", "equal"):
                hits[f"{direction}_{count}"] = np.asarray(getattr(ranks, f"{direction}_{count}"))
    if ranks is not None:
        ranks_t2v, ranks_v2t = ranks.t2v, ranks.v2t
        tied_t2v = getattr(ranks, "t2v_tied", tied_t2v)
        tied_v2t = getattr(ranks, "v2t_tied", tied_v2t)
        tie_policy = getattr(ranks, "tie_policy", tie_policy)
    if ranks_t2v is None or ranks_v2t is None:
        raise RecordError(f"run record {name!r}: pass ranks= (QueryRanks) or ranks_t2v= and ranks_v2t=")
    if not _ROW_NAME.match(name):
        raise RecordError(f"row name {name!r} must be letters, digits and . _ + - (it names a folder)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "t2v": np.asarray(ranks_t2v, dtype=np.float64),
        "v2t": np.asarray(ranks_v2t, dtype=np.float64),
    }
    if tied_t2v is not None:
        arrays["tied_t2v"] = np.asarray(tied_t2v, dtype=bool)
    if tied_v2t is not None:
        arrays["tied_v2t"] = np.asarray(tied_v2t, dtype=bool)
    arrays.update(hits)
    np.savez(out / RANKS_FILE, **arrays)
    if sim is not None:
        np.savez_compressed(out / SIM_FILE, sim=np.asarray(sim, dtype=np.float32))
    _dump(out / CONFIG_FILE, config or {})
    payload = {
        "version": RECORD_VERSION,
        "name": name,
        "protocol": protocol,
        "tie_policy": tie_policy,
        "metrics": {k: float(v) for k, v in metrics.items()},
        **(extra or {}),
    }
    _dump(out / METRICS_FILE, payload)
    return out


def write_suite_info(
    runs_dir: str | Path,
    suite: str,
    *,
    protocol: str,
    rows: list[str],
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``runs/<suite>/suite.json`` (row order and footnotes); returns its path."""
    folder = Path(runs_dir) / suite
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUITE_FILE
    _dump(
        path,
        {
            "suite": suite,
            "protocol": protocol,
            "rows": list(rows),
            "notes": list(notes or []),
            **(extra or {}),
        },
    )
    return path


def read_suite_info(runs_dir: str | Path, suite: str) -> SuiteInfo:
    """``suite.json`` of a suite (a bare default when the runner did not write one)."""
    path = Path(runs_dir) / suite / SUITE_FILE
    if not path.is_file():
        return SuiteInfo(suite=suite)
    data = dict(_load(path))
    return SuiteInfo(
        suite=str(data.pop("suite", suite)),
        protocol=str(data.pop("protocol", "")),
        rows=list(data.pop("rows", [])),
        notes=list(data.pop("notes", [])),
        extra=data,
    )


def read_run_record(directory: str | Path) -> RunRecord:
    """Read one row's record folder."""
    folder = Path(directory)
    data = dict(_load(folder / METRICS_FILE))
    ranks_path = folder / RANKS_FILE
    if not ranks_path.is_file():
        raise RecordError(f"{ranks_path} is missing: rerun the suite to record per-query ranks")
    with np.load(ranks_path) as ranks:
        t2v = ranks["t2v"]
        v2t = ranks["v2t"]
        tied_t2v = ranks["tied_t2v"] if "tied_t2v" in ranks.files else None
        tied_v2t = ranks["tied_v2t"] if "tied_v2t" in ranks.files else None
        hits_t2v = ranks["hits_t2v"] if "hits_t2v" in ranks.files else None
        hits_v2t = ranks["hits_v2t"] if "hits_v2t" in ranks.files else None
        counts = {k: ranks[k] for k in COUNT_KEYS if k in ranks.files}
    config_path = folder / CONFIG_FILE
    config = _load(config_path) if config_path.is_file() else {}
    data.pop("version", None)
    if "metrics" not in data:
        raise RecordError(f"{folder / METRICS_FILE} has no 'metrics' key; rerun the suite to rewrite it")
    return RunRecord(
        name=str(data.pop("name", folder.name)),
        metrics={k: float(v) for k, v in data.pop("metrics").items()},
        ranks_t2v=t2v,
        ranks_v2t=v2t,
        tie_policy=str(data.pop("tie_policy", "pessimistic")),
        protocol=str(data.pop("protocol", "")),
        extra=data,
        config=config,
        tied_t2v=tied_t2v,
        tied_v2t=tied_v2t,
        path=folder,
        hits_t2v=hits_t2v,
        hits_v2t=hits_v2t,
        counts=counts,
    )


def list_suites(runs_dir: str | Path) -> list[str]:
    """Suites with at least one recorded row under ``runs_dir``."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"*/{METRICS_FILE}")))


def read_suite_records(runs_dir: str | Path, suite: str) -> list[RunRecord]:
    """Every row of a suite, in ``suite.json``'s row order (unlisted rows after, by name)."""
    folder = Path(runs_dir) / suite
    if not folder.is_dir():
        known = ", ".join(list_suites(runs_dir)) or "none"
        raise RecordError(
            f"no recorded runs for suite {suite!r} in {folder}; run `clip2video ablation --suite {suite}` "
            f"first (recorded suites: {known})"
        )
    info = read_suite_info(runs_dir, suite)
    found = {p.name: p for p in folder.iterdir() if (p / METRICS_FILE).is_file()}
    missing = [row for row in info.rows if row not in found]
    if missing:
        raise RecordError(
            f"{folder / SUITE_FILE} lists rows with no record: {', '.join(missing)}; rerun the suite"
        )
    order = list(info.rows) + sorted(set(found) - set(info.rows))
    if not order:
        raise RecordError(f"{folder} holds no row records ({METRICS_FILE}); rerun the suite")
    return [read_run_record(found[row]) for row in order]
