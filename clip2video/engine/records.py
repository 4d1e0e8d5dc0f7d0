"""The on-disk record of a suite run: what the runner writes and what tables, plots and drift read.

Layout (one folder per suite, one per row)::

    runs/<suite>/suite.json             suite name, protocol, row order, notes (footnotes)
    runs/<suite>/<row>/metrics.json     metrics, tie policy, v2t convention, protocol, fingerprint, extras
    runs/<suite>/<row>/ranks.npz        every ``QueryRanks`` field, ``caption_video`` and extra per-query
                                        arrays (``array:<name>``), so the exact ranks can be rebuilt
    runs/<suite>/<row>/sim.npz          the similarity matrix, compressed (optional); for a model with two
                                        similarity parts (TAB) also ``sim_global`` and ``sim_aligned``
    runs/<suite>/<row>/config.json      the fully resolved config of the row
    runs/<suite>/<row>/record.sha256    the manifest, written last: the SHA-256 of every file above
                                        (``sha256sum -c record.sha256`` checks it) and the suite-run
                                        generation that wrote the record

A record is one unit. The writer removes the manifest first, writes each file atomically (temporary
file, rename) and writes the manifest last, so a writer that dies half way leaves a record without a
manifest. A reader accepts only a complete record whose files agree: the manifest is present, every
file it lists has its hash, and ``metrics.json`` equals ``metrics_from_ranks`` of ``ranks.npz``;
anything else is a :class:`RecordError` naming the file (``--resume`` recomputes such a row).

``suite.json`` records the suite-run generations: each ``clip2video ablation`` run is a new
generation (``begin_generation``), ``running`` until it writes its rows (``complete``) or stops
(``interrupted`` / ``failed``). ``rows`` and ``records`` (each row's manifest digest) are those of the
latest complete generation; ``read_suite_records`` refuses to mix them with rows a later,
unfinished generation rewrote.

Known extra keys in ``metrics.json`` (all optional): ``model``, ``seed``, ``order_acc``,
``selected_on_test`` (bool), ``postprocess`` (e.g. ``"dsl"`` or ``"qbnorm:train-captions"``),
``dropped`` (``{"videos": n, "captions": m, "ids": [...]}``), ``legacy`` (the metrics under the
``legacy`` tie policy), ``device``. Known per-query arrays: ``order_wins`` (one float per caption:
1 / 0.5 / 0 against its reversed twin, NaN for a caption without a twin).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import socket
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip2video.errors import Clip2VideoError, ConfigError
from clip2video.fileio import SAFE_NAME, atomic_path, atomic_write_text, fsync_dir, safe_name
from clip2video.fingerprint import file_sha256
from clip2video.metrics import QueryRanks, metrics_from_ranks, recall_at

SUITE_FILE = "suite.json"
METRICS_FILE = "metrics.json"
RANKS_FILE = "ranks.npz"
SIM_FILE = "sim.npz"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "record.sha256"
RECORD_FILES = (RANKS_FILE, SIM_FILE, CONFIG_FILE, METRICS_FILE)  # in the order they are written
RECORD_VERSION = 2
_ROW_NAME = SAFE_NAME
# metrics.json against metrics_from_ranks(ranks.npz): equal up to float summation order
_METRICS_RTOL = 1e-9
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
    digests: dict[str, str] = field(default_factory=dict, repr=False)  # the manifest's file -> sha256

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
        if self.sim_path is None:
            raise RecordError(f"run {self.name!r} ({self.path}) has no {SIM_FILE}; rerun the suite with sims")
        return self._read_sim(lambda data: data["sim"])

    def load_sim_parts(self) -> dict[str, np.ndarray]:
        """The recorded similarity parts (``{"global": ..., "aligned": ...}`` for TAB models: the
        float32 matrices the combined ``sim`` was made from); empty where none were recorded."""
        if self.sim_path is None:
            return {}
        return self._read_sim(
            lambda data: {
                k[len(SIM_PART_PREFIX) :]: data[k] for k in data.files if k.startswith(SIM_PART_PREFIX)
            }
        )

    def _read_sim(self, take: Any) -> Any:
        """``take(npz)`` of ``sim.npz``, checked against the manifest first (it is the large file,
        so it is hashed when it is read, not with the rest of the record)."""
        path = self.sim_path
        assert path is not None and self.path is not None
        want = self.digests.get(SIM_FILE)
        if want is not None and file_sha256(path) != want:
            raise RecordError(_disagree(path, self.path / MANIFEST_FILE))
        try:
            with open(path, "rb") as handle, np.load(handle) as data:
                return take(data)
        except (*_NPZ_ERRORS, KeyError) as exc:
            raise RecordError(_corrupt(path, exc)) from exc


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
    """``suite.json``: the suite's name, protocol, row order and footnotes, and its generations.

    ``rows`` and ``records`` (row -> manifest digest) belong to generation ``complete_generation``
    (None for a ``suite.json`` written outside a suite run); ``generation`` is the latest one
    (``{"number", "state", "started", "finished", "pid", "host", "command", "reason"}``).
    """

    suite: str
    protocol: str = ""
    rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    complete_generation: int | None = None
    records: dict[str, str] = field(default_factory=dict)


_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dump(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _load(path: Path) -> Any:
    if not path.is_file():
        raise RecordError(f"{path} is missing: rerun the suite (clip2video ablation --suite ...)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} is not valid JSON ({exc}); rerun the suite to rewrite it") from exc


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- writing a record

_WRITER: dict[str, int | None] = {"generation": None}


@contextmanager
def writing_generation(number: int | None) -> Iterator[None]:
    """Records written (and ``write_suite_info`` called) in this block belong to generation
    ``number``; the suite runner sets it in its process and in each row worker."""
    before = _WRITER["generation"]
    _WRITER["generation"] = number
    try:
        yield
    finally:
        _WRITER["generation"] = before


def current_generation() -> int | None:
    """The generation set by :func:`writing_generation`, or None."""
    return _WRITER["generation"]


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
    """Write one row's record into ``directory`` (created) as one unit and return the folder.

    ``ranks``: the row's ``QueryRanks`` (every field is stored); ``caption_video``: caption i's
    video (defaults to one caption per video when the ranks are single-caption). ``arrays``: extra
    per-query arrays (e.g. ``{"order_wins": ...}``, one value per caption), read back as
    ``RunRecord.arrays``. ``ranks_t2v`` / ``ranks_v2t`` (plain integer rank vectors, no ties) are
    accepted instead of ``ranks`` for records made by hand. ``sim_parts``: the similarity's parts
    (``{"global": ..., "aligned": ...}`` for TAB), stored as float32 ``sim_<part>`` in ``sim.npz``
    beside ``sim`` (so a table can re-weight them without the model).

    The manifest (``record.sha256``) is removed first and written last, and every file goes
    through a temporary file: a writer that dies leaves either the previous complete record or an
    incomplete one that every reader refuses, never a mix of two runs' files.
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
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # from here on the folder is an incomplete record
    fsync_dir(out)
    with atomic_path(out / RANKS_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **stored)
    if sim is not None:
        parts = {
            SIM_PART_PREFIX + str(k): np.asarray(v, dtype=np.float32) for k, v in (sim_parts or {}).items()
        }
        with atomic_path(out / SIM_FILE) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, sim=np.asarray(sim, dtype=np.float32), **parts)
    else:
        (out / SIM_FILE).unlink(missing_ok=True)  # an earlier run's matrix is not this record's
    _dump(out / CONFIG_FILE, config or {})
    _dump(out / METRICS_FILE, payload)
    written = [f for f in RECORD_FILES if (out / f).is_file()]
    lines = [
        f"# clip2video run record {name!r} (record version {RECORD_VERSION}): generation "
        f"{current_generation() or 0}, written {_now()}; check with `sha256sum -c {MANIFEST_FILE}`",
        *(f"{file_sha256(out / f)}  {f}" for f in written),
    ]
    atomic_write_text(out / MANIFEST_FILE, "\n".join(lines) + "\n")
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


# ----------------------------------------------------------------------------- reading a record


def manifest_digest(directory: str | Path) -> str | None:
    """The identity of a complete record (the SHA-256 of its manifest), None when it has none."""
    path = Path(directory) / MANIFEST_FILE
    return file_sha256(path) if path.is_file() else None


def read_manifest(directory: str | Path) -> tuple[dict[str, str], int | None]:
    """(file name -> SHA-256, the generation that wrote it) from a record's manifest.

    A record without one is incomplete: its writer stopped before finishing it (or a version
    before manifests wrote it); :class:`RecordError` says so and that ``--resume`` recomputes it.
    """
    folder = Path(directory)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        present = [f for f in RECORD_FILES if (folder / f).is_file()]
        if not present:
            raise RecordError(f"{folder} holds no run record; rerun the suite")
        raise RecordError(
            f"{folder} is an incomplete run record: it has no {MANIFEST_FILE}, the file written last "
            "(its writer stopped before finishing, or a version without manifests wrote it); "
            "`clip2video ablation ... --resume` recomputes the row"
        )
    digests: dict[str, str] = {}
    generation = None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} cannot be read ({exc}); `--resume` recomputes the row") from exc
    for line in text.splitlines():
        if line.startswith("#"):
            found = re.search(r"generation (\d+)", line)
            generation = int(found.group(1)) if found and int(found.group(1)) > 0 else generation
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]) or parts[1] not in RECORD_FILES:
            raise RecordError(f"{path} is malformed (line {line[:80]!r}); `--resume` recomputes the row")
        digests[parts[1]] = parts[0]
    if METRICS_FILE not in digests or RANKS_FILE not in digests:
        raise RecordError(f"{path} lists no {METRICS_FILE} / {RANKS_FILE}; `--resume` recomputes the row")
    return digests, generation


def _disagree(path: Path, manifest: Path) -> str:
    return (
        f"{path} does not match {manifest} (its SHA-256 differs): the files of this record do not "
        "belong together (edited by hand, or left by another run); `--resume` recomputes the row"
    )


def _corrupt(path: Path, exc: BaseException) -> str:
    reason = " ".join(str(exc).split())[:160] or "no message"
    return f"{path} is corrupt ({type(exc).__name__}: {reason}); `--resume` recomputes the row"


def read_run_record(directory: str | Path) -> RunRecord:
    """Read one row's record folder (record version 2), accepting only a complete record whose
    files agree: its manifest is present, every file has the manifest's hash (``sim.npz`` when it
    is loaded), and ``metrics.json`` equals the metrics of ``ranks.npz``. Anything else is a
    :class:`RecordError` naming the file."""
    folder = Path(directory)
    digests, _ = read_manifest(folder)
    for name in digests:
        if not (folder / name).is_file():
            raise RecordError(
                f"{folder / name} is missing but {folder / MANIFEST_FILE} lists it; `--resume` recomputes the row"
            )
    data = dict(_load(folder / METRICS_FILE))
    version = data.pop("version", None)
    if version != RECORD_VERSION:
        raise RecordError(
            f"{folder / METRICS_FILE} is record version {version}, this code reads version {RECORD_VERSION}; "
            "rerun the suite to rewrite it"
        )
    if not isinstance(data.get("metrics"), dict):
        raise RecordError(f"{folder / METRICS_FILE} has no 'metrics' key; rerun the suite to rewrite it")
    ranks_path = folder / RANKS_FILE
    try:
        with open(ranks_path, "rb") as handle, np.load(handle) as stored:
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
    except RecordError:
        raise
    except KeyError as exc:
        raise RecordError(f"{folder / METRICS_FILE} lacks {exc}; rerun the suite to rewrite it") from exc
    except (*_NPZ_ERRORS, TypeError) as exc:
        raise RecordError(_corrupt(ranks_path, exc)) from exc
    metrics = {k: float(v) for k, v in data.pop("metrics").items()}
    _check_metrics(folder, metrics, ranks)
    for name, want in digests.items():
        if name != SIM_FILE and file_sha256(folder / name) != want:
            raise RecordError(_disagree(folder / name, folder / MANIFEST_FILE))
    config_path = folder / CONFIG_FILE
    return RunRecord(
        name=str(data.pop("name", folder.name)),
        metrics=metrics,
        ranks=ranks,
        caption_video=caption_video,
        protocol=str(data.pop("protocol", "")),
        fingerprint=dict(data.pop("fingerprint", None) or {}),
        config=_load(config_path) if config_path.is_file() else {},
        extra=data,
        arrays=arrays,
        path=folder,
        digests=digests,
    )


def _check_metrics(folder: Path, metrics: dict[str, float], ranks: QueryRanks) -> None:
    """``metrics.json`` must state what its ranks give (a hand edit, or the metrics of another run,
    is named with both values)."""
    try:
        truth = metrics_from_ranks(ranks)
    except Exception as exc:  # noqa: BLE001 - inconsistent arrays: the ranks file is not a record's
        raise RecordError(_corrupt(folder / RANKS_FILE, exc)) from exc
    for key, value in metrics.items():
        if key not in truth:
            continue
        want = float(truth[key])
        same = (math.isnan(value) and math.isnan(want)) or math.isclose(
            value, want, rel_tol=_METRICS_RTOL, abs_tol=_METRICS_RTOL
        )
        if not same:
            raise RecordError(
                f"{folder / METRICS_FILE} says {key} = {value:g}, but the ranks it was written with "
                f"({RANKS_FILE}) give {want:g}: the record's files disagree; `clip2video ablation ... "
                "--resume` recomputes the row"
            )


# ----------------------------------------------------------------------------- suite.json, generations


def write_suite_info(
    runs_dir: str | Path,
    suite: str,
    *,
    protocol: str,
    rows: list[str],
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``runs/<suite>/suite.json`` (row order and footnotes, each row's record id); returns
    its path. Inside a generation (:func:`writing_generation`, the suite runner) this completes it:
    the rows are that generation's."""
    safe_name(suite, "suite name")
    folder = Path(runs_dir) / suite
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUITE_FILE
    previous = _raw_suite_json(path)
    number = current_generation()
    generation = dict(previous.get("generation") or {})
    payload: dict[str, Any] = {
        "suite": suite,
        "protocol": protocol,
        "rows": list(rows),
        "notes": list(notes or []),
        **(extra or {}),
        "records": {row: manifest_digest(folder / row) for row in rows},
    }
    if number is not None:
        generation.update(number=number, state="complete", finished=_now())
        generation.pop("reason", None)
        payload["complete_generation"] = number
    if generation:
        payload["generation"] = generation
    _dump(path, payload)
    return path


def _raw_suite_json(path: Path) -> dict[str, Any]:
    """``suite.json`` as a dict ({} when absent or unreadable: a new generation rewrites it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def begin_generation(runs_dir: str | Path, suite: str, *, command: str | None = None) -> int:
    """Start a new generation of ``suite``'s runs folder: ``suite.json`` keeps the rows of the last
    complete generation and records the new one as ``running``; returns its number."""
    safe_name(suite, "suite name")
    folder = Path(runs_dir) / suite
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUITE_FILE
    data = _raw_suite_json(path)
    last = data.get("generation") or {}
    number = max(int(last.get("number") or 0), int(data.get("complete_generation") or 0)) + 1
    data.setdefault("suite", suite)
    data["generation"] = {
        "number": number,
        "state": "running",
        "started": _now(),
        "finished": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command if command is not None else " ".join(["clip2video", *sys.argv[1:]]),
    }
    _dump(path, data)
    return number


def end_generation(runs_dir: str | Path, suite: str, number: int, state: str, reason: str = "") -> None:
    """Mark generation ``number`` ``interrupted`` or ``failed`` (saying why); the rows stay those of
    the last complete generation. A generation already complete is left as it is."""
    path = Path(runs_dir) / suite / SUITE_FILE
    data = _raw_suite_json(path)
    generation = dict(data.get("generation") or {})
    if generation.get("number") != number or generation.get("state") == "complete":
        return
    generation.update(state=state, finished=_now(), reason=reason)
    data["generation"] = generation
    _dump(path, data)


def read_suite_info(runs_dir: str | Path, suite: str) -> SuiteInfo:
    """``suite.json`` of a suite (a bare default when the runner did not write one)."""
    path = Path(runs_dir) / suite / SUITE_FILE
    if not path.is_file():
        return SuiteInfo(suite=suite)
    data = _load(path)
    if not isinstance(data, dict):
        raise RecordError(f"{path} is not a suite record (a JSON object); rerun the suite to rewrite it")
    data = dict(data)
    complete = data.pop("complete_generation", None)
    return SuiteInfo(
        suite=str(data.pop("suite", suite)),
        protocol=str(data.pop("protocol", "")),
        rows=list(data.pop("rows", [])),
        notes=list(data.pop("notes", [])),
        generation=dict(data.pop("generation", None) or {}),
        complete_generation=int(complete) if complete is not None else None,
        records={str(k): v for k, v in (data.pop("records", None) or {}).items()},
        extra=data,
    )


def describe_generation(generation: Mapping[str, Any], runs_dir: str | Path, suite: str) -> str:
    """``generation 3 (interrupted: SIGTERM; started ..., PID 12 on host h)`` for messages; a
    ``running`` generation whose process no longer holds the runs folder's lock is reported as
    stopped."""
    from clip2video.engine.runs_lock import lock_holder

    number, state = generation.get("number", "?"), str(generation.get("state", "unknown"))
    who = f"PID {generation.get('pid', '?')} on host {generation.get('host', '?')}"
    started = generation.get("started") or "?"
    if state == "running":
        if lock_holder(Path(runs_dir) / suite) is not None:
            return f"generation {number} (running now: {who}, started {started})"
        return f"generation {number} (stopped while running: {who}, started {started}, was killed or crashed)"
    said = " ".join(str(generation.get("reason") or "").split())
    reason = f": {said[:117]}..." if len(said) > 120 else (f": {said}" if said else "")
    return f"generation {number} ({state}{reason}; {who}, started {started})"


def recorded_suites(runs_dir: str | Path) -> list[str]:
    """Suites with at least one recorded row under ``runs_dir`` (``experiments.suite.list_suites``
    lists the shipped suite files instead)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and SAFE_NAME.match(p.name) and any(p.glob(f"*/{METRICS_FILE}"))
    )


def _row_folders(runs_dir: str | Path, suite: str) -> dict[str, Path]:
    try:
        safe_name(suite, "suite name")
    except ConfigError as exc:
        raise RecordError(str(exc)) from None
    folder = Path(runs_dir) / suite
    if not folder.is_dir():
        known = ", ".join(recorded_suites(runs_dir)) or "none"
        raise RecordError(
            f"no recorded runs for suite {suite!r} in {folder}; run `clip2video ablation --suite {suite}` "
            f"first (recorded suites: {known})"
        )
    return {
        p.name: p for p in folder.iterdir() if (p / METRICS_FILE).is_file() or (p / MANIFEST_FILE).is_file()
    }


def unlisted_rows(runs_dir: str | Path, suite: str) -> list[str]:
    """Row folders of ``suite`` that its ``suite.json`` does not list (stale rows of an earlier
    run); ``read_suite_records`` ignores them. Empty when there is no ``suite.json``."""
    info = read_suite_info(runs_dir, suite)
    if not (Path(runs_dir) / suite / SUITE_FILE).is_file():
        return []
    return sorted(set(_row_folders(runs_dir, suite)) - set(info.rows))


def read_suite_records(runs_dir: str | Path, suite: str) -> list[RunRecord]:
    """The rows of the latest complete generation, in ``suite.json``'s order, each a complete record.

    Folders ``suite.json`` does not list (stale rows of an earlier run) are ignored
    (``unlisted_rows`` names them); without a ``suite.json`` every row folder is read, by name.
    When a later generation stopped after rewriting some of the rows, the rows would come from two
    runs: that is a :class:`RecordError` naming those rows, both generations and how to finish;
    when it rewrote none, the rows are read with a warning that the later generation did not finish.
    """
    folder = Path(runs_dir) / suite
    found = _row_folders(runs_dir, suite)
    if not (folder / SUITE_FILE).is_file():
        order = sorted(found)
        if not order:
            raise RecordError(f"{folder} holds no row records ({METRICS_FILE}); rerun the suite")
        return [read_run_record(found[row]) for row in order]
    info = read_suite_info(runs_dir, suite)
    latest = info.generation
    unfinished = bool(latest) and latest.get("state") != "complete"
    if not info.rows and unfinished:
        raise RecordError(
            f"suite {suite!r} in {folder} has no complete run: its only {describe_generation(latest, runs_dir, suite)} "
            f"did not finish; finish it with `clip2video ablation --suite {suite} --resume` (with the settings it "
            "ran with), or wait for it"
        )
    order = list(info.rows)
    rewritten = [
        row
        for row in order
        if row in info.records and (row not in found or manifest_digest(found[row]) != info.records[row])
    ]
    missing = [row for row in order if row not in found and row not in rewritten]
    if missing:
        raise RecordError(
            f"{folder / SUITE_FILE} lists rows with no record: {', '.join(missing)}; rerun the suite"
        )
    if rewritten:
        later = describe_generation(latest, runs_dir, suite) if unfinished else "a later run"
        which = f"{', '.join(rewritten)} {'was' if len(rewritten) == 1 else 'were'} rewritten by {later}"
        complete = f"generation {info.complete_generation or '?'}"
        mixed = [row for row in order if row not in rewritten]
        if mixed:
            what = (
                f"a table would mix two runs: {which}, which did not finish, while {', '.join(mixed)} "
                f"{'is' if len(mixed) == 1 else 'are'} still from {complete}, the last complete run"
            )
        else:
            what = f"the last complete run, {complete}, is no longer whole: {which}, which did not finish"
        raise RecordError(
            f"suite {suite!r} in {folder}: {what}. Finish the unfinished run with `clip2video ablation "
            f"--suite {suite} --resume` (and the settings it ran with), or rerun the suite"
        )
    if unfinished:
        warnings.warn(
            f"suite {suite!r}: {describe_generation(latest, runs_dir, suite)} did not finish and rewrote no "
            f"row; reading generation {info.complete_generation or '?'}, the last complete run",
            stacklevel=2,
        )
    return [read_run_record(found[row]) for row in order]
