"""The on-disk record of a suite run: what the runner writes and what tables, plots and drift read.

Layout (one folder per suite, one per row)::

    runs/<suite>/suite.json             suite name, protocol, row order, notes (footnotes)
    runs/<suite>/<row>/metrics.json     metrics, tie policy, v2t convention, protocol, fingerprint, extras
    runs/<suite>/<row>/ranks.npz        every ``QueryRanks`` field, ``caption_video`` and extra per-query
                                        arrays (``array:<name>``), so the exact ranks can be rebuilt
    runs/<suite>/<row>/sim.npz          the similarity matrix, compressed (optional); for a model with two
                                        similarity parts (TAB) also ``sim_global`` and ``sim_aligned``
    runs/<suite>/<row>/config.json      the fully resolved config of the row

Known extra keys in ``metrics.json`` (all optional): ``model``, ``seed``, ``order_acc``,
``selected_on_test`` (bool), ``postprocess`` (e.g. ``"dsl"`` or ``"qbnorm:train-captions"``),
``dropped`` (``{"videos": n, "captions": m, "ids": [...]}``), ``legacy`` (the metrics under the
``legacy`` tie policy), ``device``. Known per-query arrays: ``order_wins`` (one float per caption:
1 / 0.5 / 0 against its reversed twin, NaN for a caption without a twin).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip2video.errors import Clip2VideoError
from clip2video.metrics import QueryRanks, recall_at

SUITE_FILE = "suite.json"
METRICS_FILE = "metrics.json"
RANKS_FILE = "ranks.npz"
SIM_FILE = "sim.npz"
CONFIG_FILE = "config.json"
RECORD_VERSION = 2
_ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_RANK_ARRAYS = (
    "t2v",
    "v2t",
    "t2v_tied",
    "v2t_tied",
    "t2v_higher",
    "t2v_equal",
    "t2v_before",
    "v2t_higher",
    "v2t_equal",
)
_ARRAY_PREFIX = "array:"
SIM_PART_PREFIX = "sim_"  # sim.npz: ``sim_<part>`` beside ``sim`` (sim_global, sim_aligned)


class RecordError(Clip2VideoError):
    """A run record is missing or malformed."""


@dataclass
class RunRecord:
    """One row of a suite: a model's final metrics, its exact per-query ranks and extras."""

    name: str
    metrics: dict[str, float]
    ranks: QueryRanks
    caption_video: np.ndarray
    protocol: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    def query_ranks(self) -> QueryRanks:
        """The exact ``QueryRanks`` the runner recorded (``metrics_from_ranks`` of it = ``metrics``)."""
        return self.ranks

    @property
    def ranks_t2v(self) -> np.ndarray:
        """Per-caption t2v ranks under the record's tie policy."""
        return self.ranks.t2v

    @property
    def ranks_v2t(self) -> np.ndarray:
        """Per-video v2t ranks under the record's tie policy."""
        return self.ranks.v2t

    @property
    def tie_policy(self) -> str:
        """The tie policy the ranks were made with."""
        return self.ranks.tie_policy

    @property
    def model(self) -> str:
        """The model of the row (``extra["model"]``, else the row name)."""
        return str(self.extra.get("model") or self.name)

    @property
    def seed(self) -> int | None:
        """The row's seed (``extra["seed"]``), or None where it was not recorded."""
        value = self.extra.get("seed")
        return None if value is None else int(value)

    def gallery_size(self, direction: str) -> int:
        """How many candidates a query of ``direction`` is ranked among."""
        if direction == "t2v" or self.ranks.v2t_convention == "official":
            return len(self.ranks.v2t)
        return len(self.ranks.t2v)

    def recall_curve(self, direction: str, ks: np.ndarray) -> np.ndarray:
        """``R@K`` (percent) of ``direction`` for every K in ``ks``, through the metrics core."""
        return recall_at(self.ranks, direction, ks)

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

    def load_sim_parts(self) -> dict[str, np.ndarray]:
        """The recorded similarity parts (``{"global": ..., "aligned": ...}`` for TAB models: the
        float32 matrices the combined ``sim`` was made from); empty where none were recorded."""
        path = self.sim_path
        if path is None:
            return {}
        with np.load(path) as data:
            return {k[len(SIM_PART_PREFIX) :]: data[k] for k in data.files if k.startswith(SIM_PART_PREFIX)}


def ranks_from_vectors(t2v: Any, v2t: Any) -> QueryRanks:
    """``QueryRanks`` of plain integer rank vectors without ties (pessimistic, one caption per video
    when both have the same length). For records written from bare rank vectors (tests, tools)."""
    out = {}
    for direction, values in (("t2v", t2v), ("v2t", v2t)):
        rank = np.asarray(values, dtype=np.float64).reshape(-1)
        if rank.size == 0 or not np.all(np.isfinite(rank)) or np.any(rank < 1) or np.any(rank % 1):
            raise RecordError(
                f"ranks_{direction} must be integer ranks >= 1; pass ranks= (a QueryRanks) for ties"
            )
        out[direction] = rank
    higher = {d: out[d].astype(np.int64) - 1 for d in out}
    return QueryRanks(
        t2v=out["t2v"],
        v2t=out["v2t"],
        t2v_tied=np.zeros(len(out["t2v"]), dtype=bool),
        v2t_tied=np.zeros(len(out["v2t"]), dtype=bool),
        t2v_higher=higher["t2v"],
        t2v_equal=np.zeros_like(higher["t2v"]),
        t2v_before=np.zeros_like(higher["t2v"]),
        v2t_higher=higher["v2t"],
        v2t_equal=np.zeros_like(higher["v2t"]),
        tie_policy="pessimistic",
        v2t_convention="official",
        single_caption=len(out["t2v"]) == len(out["v2t"]),
    )


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
    metrics: Mapping[str, float],
    ranks: QueryRanks | None = None,
    caption_video: Any = None,
    protocol: str = "",
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    sim: np.ndarray | None = None,
    fingerprint: dict[str, Any] | None = None,
    arrays: Mapping[str, Any] | None = None,
    ranks_t2v: np.ndarray | None = None,
    ranks_v2t: np.ndarray | None = None,
    sim_parts: Mapping[str, Any] | None = None,
) -> Path:
    """Write one row's record into ``directory`` (created) and return the folder.

    ``ranks``: the row's ``QueryRanks`` (every field is stored); ``caption_video``: caption i's
    video (defaults to one caption per video when the ranks are single-caption). ``arrays``: extra
    per-query arrays (e.g. ``{"order_wins": ...}``, one value per caption), read back as
    ``RunRecord.arrays``. ``ranks_t2v`` / ``ranks_v2t`` (plain integer rank vectors, no ties) are
    accepted instead of ``ranks`` for records made by hand. ``sim_parts``: the similarity's parts
    (``{"global": ..., "aligned": ...}`` for TAB), stored as float32 ``sim_<part>`` in ``sim.npz``
    beside ``sim`` (so a table can re-weight them without the model).
    """
    if not _ROW_NAME.match(name):
        raise RecordError(f"row name {name!r} must be letters, digits and . _ + - (it names a folder)")
    if sim_parts and sim is None:
        raise RecordError(f"run record {name!r}: sim_parts need the combined sim= as well")
    if ranks is None:
        if ranks_t2v is None or ranks_v2t is None:
            raise RecordError(f"run record {name!r}: pass ranks= (QueryRanks) or ranks_t2v= and ranks_v2t=")
        ranks = ranks_from_vectors(ranks_t2v, ranks_v2t)
    cv = _caption_video(name, ranks, caption_video)
    stored: dict[str, np.ndarray] = {key: np.asarray(getattr(ranks, key)) for key in _RANK_ARRAYS}
    stored["caption_video"] = cv
    for key, value in (arrays or {}).items():
        stored[_ARRAY_PREFIX + str(key)] = np.asarray(value)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / RANKS_FILE, **stored)
    if sim is not None:
        parts = {
            SIM_PART_PREFIX + str(k): np.asarray(v, dtype=np.float32) for k, v in (sim_parts or {}).items()
        }
        np.savez_compressed(out / SIM_FILE, sim=np.asarray(sim, dtype=np.float32), **parts)
    _dump(out / CONFIG_FILE, config or {})
    payload = {
        "version": RECORD_VERSION,
        "name": name,
        "protocol": protocol,
        "tie_policy": ranks.tie_policy,
        "v2t_convention": ranks.v2t_convention,
        "single_caption": bool(ranks.single_caption),
        "fingerprint": fingerprint or {},
        "metrics": {k: float(v) for k, v in metrics.items()},
        **(extra or {}),
    }
    _dump(out / METRICS_FILE, payload)
    return out


def _caption_video(name: str, ranks: QueryRanks, caption_video: Any) -> np.ndarray:
    """``caption_video`` checked against the ranks (one entry per caption, one video per v2t query)."""
    n, m = len(ranks.t2v), len(ranks.v2t)
    if caption_video is None:
        if n != m:
            raise RecordError(
                f"run record {name!r}: {n} captions for {m} videos, pass caption_video= (caption i's video)"
            )
        return np.arange(n, dtype=np.int64)
    cv = np.asarray(caption_video, dtype=np.int64).reshape(-1)
    if len(cv) != n or (n and (cv.min() < 0 or cv.max() >= m)):
        raise RecordError(
            f"run record {name!r}: caption_video must hold {n} video indices in [0, {m}), "
            f"got {len(cv)} entries"
        )
    return cv


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
    """Read one row's record folder (record version 2)."""
    folder = Path(directory)
    data = dict(_load(folder / METRICS_FILE))
    version = data.pop("version", None)
    if version != RECORD_VERSION:
        raise RecordError(
            f"{folder / METRICS_FILE} is record version {version}, this code reads version {RECORD_VERSION}; "
            "rerun the suite to rewrite it"
        )
    if "metrics" not in data:
        raise RecordError(f"{folder / METRICS_FILE} has no 'metrics' key; rerun the suite to rewrite it")
    ranks_path = folder / RANKS_FILE
    if not ranks_path.is_file():
        raise RecordError(f"{ranks_path} is missing: rerun the suite to record per-query ranks")
    with np.load(ranks_path) as stored:
        missing = [k for k in (*_RANK_ARRAYS, "caption_video") if k not in stored.files]
        if missing:
            raise RecordError(f"{ranks_path} lacks {', '.join(missing)}; rerun the suite to rewrite it")
        fields = {k: stored[k] for k in _RANK_ARRAYS}
        caption_video = stored["caption_video"]
        arrays = {k[len(_ARRAY_PREFIX) :]: stored[k] for k in stored.files if k.startswith(_ARRAY_PREFIX)}
    ranks = QueryRanks(
        **fields,
        tie_policy=str(data.pop("tie_policy")),
        v2t_convention=str(data.pop("v2t_convention")),
        single_caption=bool(data.pop("single_caption")),
    )
    config_path = folder / CONFIG_FILE
    return RunRecord(
        name=str(data.pop("name", folder.name)),
        metrics={k: float(v) for k, v in data.pop("metrics").items()},
        ranks=ranks,
        caption_video=caption_video,
        protocol=str(data.pop("protocol", "")),
        fingerprint=dict(data.pop("fingerprint", None) or {}),
        config=_load(config_path) if config_path.is_file() else {},
        extra=data,
        arrays=arrays,
        path=folder,
    )


def list_suites(runs_dir: str | Path) -> list[str]:
    """Suites with at least one recorded row under ``runs_dir``."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"*/{METRICS_FILE}")))


def _row_folders(runs_dir: str | Path, suite: str) -> dict[str, Path]:
    folder = Path(runs_dir) / suite
    if not folder.is_dir():
        known = ", ".join(list_suites(runs_dir)) or "none"
        raise RecordError(
            f"no recorded runs for suite {suite!r} in {folder}; run `clip2video ablation --suite {suite}` "
            f"first (recorded suites: {known})"
        )
    return {p.name: p for p in folder.iterdir() if (p / METRICS_FILE).is_file()}


def unlisted_rows(runs_dir: str | Path, suite: str) -> list[str]:
    """Row folders of ``suite`` that its ``suite.json`` does not list (stale rows of an earlier
    run); ``read_suite_records`` ignores them. Empty when there is no ``suite.json``."""
    info = read_suite_info(runs_dir, suite)
    if not (Path(runs_dir) / suite / SUITE_FILE).is_file():
        return []
    return sorted(set(_row_folders(runs_dir, suite)) - set(info.rows))


def read_suite_records(runs_dir: str | Path, suite: str) -> list[RunRecord]:
    """The rows ``suite.json`` lists, in its order. Folders it does not list (stale rows of an
    earlier run) are ignored (``unlisted_rows`` names them); without a ``suite.json`` every row
    folder is read, by name."""
    folder = Path(runs_dir) / suite
    found = _row_folders(runs_dir, suite)
    if (folder / SUITE_FILE).is_file():
        order = list(read_suite_info(runs_dir, suite).rows)
        missing = [row for row in order if row not in found]
        if missing:
            raise RecordError(
                f"{folder / SUITE_FILE} lists rows with no record: {', '.join(missing)}; rerun the suite"
            )
    else:
        order = sorted(found)
    if not order:
        raise RecordError(f"{folder} holds no row records ({METRICS_FILE}); rerun the suite")
    return [read_run_record(found[row]) for row in order]
