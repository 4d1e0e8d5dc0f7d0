"""Run an experiment suite end to end: data -> one worker process per (model, seed) row -> records.

The parent process prepares what rows share (generates synthetic data, loads and checks the
splits, fingerprints the data once), decides which rows ``--resume`` keeps, then runs each row in
its own worker (:mod:`clip2video.experiments.row`), ``jobs`` at a time. Everything lands on disk
first (``runs/<suite>/<row>/``: metrics, per-query ranks, the similarity matrix, config,
fingerprint, checkpoints); the parent logs MLflow from those records
(:mod:`clip2video.experiments.sync`) and ``results/`` is regenerated from them.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip2video import fingerprint as fp
from clip2video.data.annotations import SplitData
from clip2video.data.datasets import available_cores
from clip2video.data.protocols import Protocol, data_folders, get_protocol
from clip2video.data.videos import find_videos
from clip2video.engine import distributed as ddp
from clip2video.errors import Clip2VideoError, ProtocolError
from clip2video.experiments.row import (
    DataPaths,
    RowSpec,
    load_splits,
    resolved_row_settings,
    run_row_in_worker,
    run_row_spec,
)
from clip2video.experiments.suite import Suite, load_suite, validate_settings
from clip2video.plugins import imported_modules

ZERO_SHOT_ROW = "meanp-zeroshot"
REVERSAL_KEYS = ("order_changed_share", "mean_abs_score_change", "rev_t2v_R1", "rev_v2t_R1")
# Headline columns of the summary, labelled as in the results tables.
SUMMARY_COLUMNS = {
    "t2v_R1": "t2v R@1",
    "t2v_R5": "t2v R@5",
    "t2v_MnR": "t2v MnR",
    "v2t_R1": "v2t R@1",
    "v2t_R5": "v2t R@5",
    "order_acc": "order acc",
}


class RowFailed(Clip2VideoError):
    """A row's worker process failed; the message names the row."""


@dataclass
class SuiteResult:
    """What a suite run produced: one metrics dict per row, and the files it wrote."""

    suite: Suite
    runs_dir: Path
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    results_files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0
    jobs: int = 1

    def summary(self) -> str:
        """A short text table of the headline metrics, with the results tables' column names."""
        import pandas as pd
        from tabulate import tabulate

        frame = pd.DataFrame(
            [
                {"row": name, **{label: m[k] for k, label in SUMMARY_COLUMNS.items() if k in m}}
                for name, m in self.rows.items()
            ]
        )
        head = f"suite {self.suite.name!r} ({self.suite.protocol}) finished in {self.elapsed_s:.0f} s"
        table = tabulate(frame, headers="keys", tablefmt="github", showindex=False, floatfmt=".1f")
        files = f"records: {self.runs_dir / self.suite.name}"
        if self.results_files:
            files += f"\nresults: {self.results_files[0].parent}"
        return f"{head}\n{table}\n{files}"


# ----------------------------------------------------------------------------- data


def resolve_data(suite: Suite, data_root: str | Path, *, rank: int = 0) -> DataPaths:
    """Locate (or, for ``synthetic``, generate) the suite's annotations and videos."""
    protocol = get_protocol(suite.protocol)
    root = Path(data_root)
    prepare = protocol.hook("prepare_data")
    if prepare is not None:  # generated data (synthetic): rank 0 writes it, the others wait
        folder = prepare(suite.settings, root) if rank == 0 else None
        folder = ddp.broadcast_object(str(folder) if folder is not None else None)
        return DataPaths(protocol, Path(folder) / "annotations", Path(folder) / "videos")
    data = suite["data"]
    annotations, videos = data_folders(
        protocol, root, annotations=data["annotations"], videos=data["videos"]
    )  # DATA/<protocol>/ or the dataset's shared DATA/<msrvtt|msvd|vatex>/
    for what, path in (("annotations", annotations), ("videos", videos)):
        if not path.is_dir():
            raise ProtocolError(
                f"suite {suite.name!r} (protocol {protocol.name}): the {what} folder {path} does not "
                f"exist; pass --data-root DIR holding {protocol.name}/ (or "
                f"{protocol.subfolder or protocol.name}/) with annotations/ and videos/, or set "
                f"data.{what} in the suite (--set data.{what}=PATH)"
            )
    return DataPaths(protocol, annotations, videos)


def _under(root: Path, value: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else root / path


def data_fingerprint(paths: DataPaths, splits: dict[str, SplitData]) -> dict[str, Any]:
    """Content hashes of every annotation file, and the identity of each split's videos.

    A frame folder's identity covers every image inside (``fingerprint.video_identity``), so an
    overwritten jpg changes it. Computed once per suite, in the parent.
    """
    files = sorted(p for p in paths.annotations.rglob("*") if p.is_file())
    out: dict[str, Any] = {
        "annotations": {p.relative_to(paths.annotations).as_posix(): fp.file_digest(p) for p in files}
    }
    for name, split in splits.items():
        videos = find_videos(paths.videos, split.video_ids)
        out[f"videos.{name}"] = fp.digest(
            [[vid, fp.video_identity(p)] for vid, p in zip(split.video_ids, videos, strict=True)]
        )
    return out


# ----------------------------------------------------------------------------- the plan


def row_plan(suite: Suite, eval_only: bool, checkpoints: dict[str, Path], seed: int) -> list[tuple]:
    """(row name, registry model, train?, checkpoint) for each row of the suite and seed.

    Rows that do not train (the zero-shot row, ``--eval-only`` checkpoints) depend on no seed: they
    run once, with the first seed, and carry no ``-s<seed>`` suffix (repeating them would only
    repeat the same numbers and understate the spread over seeds).
    """
    first = seed == suite["seeds"][0]
    suffix = "" if len(suite["seeds"]) == 1 else f"-s{seed}"
    plan: list[tuple] = []
    if suite["zero_shot"] and first:
        plan.append((ZERO_SHOT_ROW, "meanp", False, None))
    for model in suite.models:
        ckpt = checkpoints.get(model, checkpoints.get("*"))
        if not eval_only:
            plan.append((model + suffix, model, True, ckpt))
        elif first and ckpt is None:
            warnings.warn(f"--eval-only: no checkpoint for {model!r}; its row is skipped", stacklevel=2)
        elif first:
            plan.append((model, model, False, ckpt))
    return plan


def planned_rows(suite: Suite, eval_only: bool, checkpoints: dict[str, Path] | None) -> int:
    """How many rows the suite plans over all seeds (``row_plan``'s warnings are left to ``build_specs``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(len(row_plan(suite, eval_only, dict(checkpoints or {}), s)) for s in suite["seeds"])


def _checkpoint_identity(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise Clip2VideoError(f"--checkpoint {path} does not exist; pass an existing checkpoint file")
    return {"path": str(path.resolve()), "sha256": fp.file_digest(path)}


def build_specs(
    suite: Suite,
    paths: DataPaths,
    data_fp: dict[str, Any],
    *,
    eval_only: bool,
    checkpoints: dict[str, Path],
    clip_weights: str | None,
    device: str,
    threads: int,
    runs_dir: Path,
    progress: bool,
) -> list[RowSpec]:
    """One picklable spec per (seed, row), with its resolved settings and fingerprint."""
    specs: list[RowSpec] = []
    ckpt_ids: dict[Path, dict[str, str] | None] = {}
    for seed in suite["seeds"]:
        for name, model, trained, ckpt in row_plan(suite, eval_only, checkpoints, seed):
            if ckpt is not None and ckpt not in ckpt_ids:
                ckpt_ids[ckpt] = _checkpoint_identity(ckpt)
            settings = resolved_row_settings(
                suite.settings,
                model=model,
                seed=seed,
                trained=trained,
                checkpoint=ckpt_ids.get(ckpt) if ckpt is not None else None,
                clip_weights=clip_weights,
                device=device,
                threads=threads,
            )
            fingerprint = {
                "platform": fp.platform_fingerprint(device, threads),
                "code": fp.code_version(),
                "settings": fp.digest(settings),
                "data": data_fp,
            }
            specs.append(
                RowSpec(
                    suite=suite.name,
                    row=name,
                    model=model,
                    seed=int(seed),
                    trained=trained,
                    settings=suite.settings,
                    row_settings=settings,
                    protocol=paths.protocol.name,
                    annotations=str(paths.annotations),
                    videos=str(paths.videos),
                    runs_dir=str(runs_dir),
                    device=device,
                    threads=threads,
                    checkpoint=str(ckpt) if ckpt is not None else None,
                    clip_weights=clip_weights,
                    progress=progress,
                    fingerprint=fingerprint,
                    imports=imported_modules(),
                )
            )
    return specs


# ----------------------------------------------------------------------------- resume


RESUME_KEYS = ("settings", "data", "code")


def finished_record(spec: RowSpec) -> tuple[Any | None, list[str]]:
    """(the row's record, []) when ``--resume`` may keep it; (None, what differs) otherwise."""
    from clip2video.engine.records import RecordError, read_run_record

    if not (spec.row_dir / "metrics.json").is_file():
        return None, []
    try:
        record = read_run_record(spec.row_dir)
    except RecordError as exc:
        return None, [f"unreadable record ({exc})"]
    old = record_fingerprint(record)
    if not old:
        return None, ["the record has no fingerprint (written by an older version)"]
    differ = fp.differences(
        {k: old.get(k) for k in RESUME_KEYS}, {k: spec.fingerprint[k] for k in RESUME_KEYS}
    )
    if differ and differ[0].startswith("settings:"):
        differ = _settings_differences(spec, record) or differ
    return (None, differ) if differ else (record, [])


def _settings_differences(spec: RowSpec, record: Any) -> list[str]:
    """Name the differing settings keys (the digest alone does not say which)."""
    old = {k: v for k, v in (record.config or {}).items() if k != "model_config"}
    return [f"settings.{d}" for d in fp.differences(old, spec.row_settings)]


def record_fingerprint(record: Any) -> dict[str, Any]:
    """A record's fingerprint (``RunRecord.fingerprint`` where the records module has it)."""
    value = getattr(record, "fingerprint", None) or record.extra.get("fingerprint")
    return dict(value) if isinstance(value, dict) else {}


def check_interrupted(spec: RowSpec) -> bool:
    """Whether the row's ``last.pt`` may be continued: only when ALL its resolved settings match.

    Raises ``Clip2VideoError`` (before any work) naming the checkpoint and the differing keys.
    """
    from clip2video.engine.checkpoint import load_checkpoint

    last = spec.row_dir / "checkpoints" / "last.pt"
    if not spec.trained or not last.is_file():
        return False
    saved = load_checkpoint(last).get("meta") or {}
    differ = fp.differences(saved.get("row_settings"), spec.row_settings)
    if differ:
        raise Clip2VideoError(
            f"--resume: the interrupted row {spec.row!r} has a checkpoint {last} written under other "
            f"settings ({'; '.join(differ[:6])}); rerun with the original settings to continue it, "
            f"or without --resume (or delete {last.parent}) to start the row over"
        )
    return True


def resume_plan(specs: list[RowSpec]) -> tuple[list[RowSpec], dict[str, Any]]:
    """(specs to run, with ``resume`` set where a checkpoint continues; kept records by row name)."""
    import dataclasses

    to_run: list[RowSpec] = []
    kept: dict[str, Any] = {}
    for spec in specs:
        record, differ = finished_record(spec)
        if record is not None:
            kept[spec.row] = record
            continue
        if differ:
            print(f"clip2video: --resume: recomputing {spec.row} ({'; '.join(differ[:4])})", flush=True)
            to_run.append(spec)  # a finished row under other settings starts over
            continue
        to_run.append(dataclasses.replace(spec, resume=check_interrupted(spec)))
    return to_run, kept


# ----------------------------------------------------------------------------- execution


def auto_jobs(device: str, threads: int, rows: int) -> int:
    """Rows at once when ``[run] jobs = 0``: one per GPU with CUDA; on a CPU, one per ``threads``
    cores (measured on 2 cores: 2 rows x 1 thread beat 1 row x 2 threads, see the README)."""
    if rows <= 1:
        return 1
    if device.startswith("cuda"):
        import torch

        return max(1, min(rows, torch.cuda.device_count()))
    return max(1, min(rows, available_cores() // max(1, threads)))


def resolve_threads(threads: int, jobs: int, device: str, rows: int) -> int:
    """torch threads per row for ``[run] threads``; ``0`` = automatic.

    Automatic gives each row its share of the cores: ``cores // (rows at once)``, where the rows
    at once are ``jobs`` or, with ``jobs = 0``, as many rows as there are cores (one per GPU with
    CUDA). So a one-row evaluation uses every core, and a many-row suite on a CPU gets one thread
    per row, as ``threads = 1`` would. ``rows`` counts every planned row, not only those left to
    run, so that ``--resume`` resolves the same count (it is part of each row's fingerprint).
    """
    if threads > 0:
        return int(threads)
    at_once = jobs if jobs > 0 else auto_jobs(device, 1, rows)
    return max(1, available_cores() // max(1, at_once))


def _gpu_for(spec: RowSpec, index: int, jobs: int) -> RowSpec:
    """Spread rows over GPUs when the device is plain ``cuda`` and several rows run at once."""
    import dataclasses

    if spec.device != "cuda" or jobs <= 1:
        return spec
    return dataclasses.replace(spec, device=f"cuda:{index % jobs}")


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver (fast: torch is imported once in the server) where available, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["clip2video.experiments.row"])
        return ctx
    return multiprocessing.get_context("spawn")


def run_rows(specs: list[RowSpec], jobs: int, on_done: Any) -> None:
    """Run each spec in a fresh worker process, ``jobs`` at a time; ``on_done(spec, error)`` per row.

    A failed row lets the running rows finish (their records are valid), cancels the rest and
    raises ``RowFailed``. Ctrl-C stops every worker; finished rows and checkpoints stay resumable.
    """
    if not specs:
        return
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=_mp_context(), max_tasks_per_child=1)
    failure: tuple[RowSpec, BaseException] | None = None
    try:
        futures = {pool.submit(run_row_in_worker, _gpu_for(s, i, jobs)): s for i, s in enumerate(specs)}
        for future in cf.as_completed(futures):
            spec = futures[future]
            if future.cancelled():
                continue
            error = future.exception()
            on_done(spec, error)
            if error is not None and failure is None:
                failure = (spec, error)
                for other in futures:
                    other.cancel()
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    if failure is not None:
        spec, error = failure
        if isinstance(error, Clip2VideoError):
            raise error
        raise RowFailed(f"row {spec.row!r} failed: {type(error).__name__}: {error}") from error


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Terminate the workers now (Ctrl-C): their last finished epoch's checkpoint stays on disk."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


def run_rows_in_process(specs: list[RowSpec], on_done: Any) -> None:
    """Under torchrun: the rows one after another in this process (every rank runs each row)."""
    for spec in specs:
        run_row_spec(spec)
        on_done(spec, None)


# ----------------------------------------------------------------------------- the suite


def run_suite(
    suite_name: str | Path,
    *,
    data_root: str | Path = "data",
    clip_weights: str | None = None,
    device: str = "cpu",
    eval_only: bool = False,
    checkpoints: dict[str, Path] | None = None,
    runs_dir: str | Path = "runs",
    tracking_uri: str | None = None,
    tracking: bool = True,
    overrides: dict[str, Any] | None = None,
    nproc: int = 1,
    progress: bool | None = None,
    resume: bool = False,
    jobs: int | None = None,
) -> SuiteResult:
    """Run every row of a suite (tables are the ``ablation`` verb's job); see ``clip2video ablation --help``.

    Rows run in worker processes, ``jobs`` at a time (None: ``[run] jobs``; 0: automatic). Under
    torchrun (``WORLD_SIZE`` set) rows run one after another in-process, every rank training and
    encoding its shard, rank 0 writing records and MLflow runs. ``progress=None`` shows progress
    bars only when stdout is a terminal. ``resume`` keeps rows whose record matches the current
    settings, data and code, and continues an interrupted row whose checkpoint has exactly these
    settings.
    """
    from clip2video.experiments.sync import RowLogger

    start = time.perf_counter()
    suite = _validated_suite(suite_name, overrides)
    rank, world = ddp.init_distributed_from_env()
    show = sys.stdout.isatty() if progress is None else bool(progress)
    runs = Path(runs_dir)
    # The data every row shares, checked and fingerprinted once.
    paths = resolve_data(suite, data_root, rank=rank)
    splits = load_splits(paths, allow_missing=suite["data"]["allow_missing"])
    split_notes = _split_file_notes(paths) if rank == 0 else []
    # The plan: one spec per row, then the rows --resume keeps and how many run at once.
    n_jobs = suite["run"]["jobs"] if jobs is None else int(jobs)
    threads = resolve_threads(
        suite["run"]["threads"], n_jobs, device, planned_rows(suite, eval_only, checkpoints)
    )
    specs = build_specs(
        suite,
        paths,
        data_fingerprint(paths, splits),
        eval_only=eval_only,
        checkpoints=dict(checkpoints or {}),
        clip_weights=clip_weights,
        device=device,
        threads=threads,
        runs_dir=runs,
        progress=show and rank == 0,
    )
    to_run, kept = resume_plan(specs) if resume else (specs, {})
    distributed = _under_torchrun(world)
    n_jobs = auto_jobs(device, threads, len(to_run)) if n_jobs <= 0 else n_jobs
    result = SuiteResult(suite=suite, runs_dir=runs, jobs=1 if distributed else n_jobs)
    # Execution: records on disk, MLflow from them; then the suite's row list and notes.
    logger = RowLogger(suite, runs, tracking_uri=tracking_uri, enabled=tracking and rank == 0)
    with logger:
        logger.ensure_logged(kept.keys())
        done = _reporting(logger.row_done, len(to_run), start) if rank == 0 else logger.row_done
        if rank == 0:
            print(_plan_line(suite, len(to_run), len(kept), distributed, n_jobs, threads), flush=True)
        if distributed:
            run_rows_in_process(to_run, done)
        else:
            run_rows(to_run, n_jobs, done)
        if rank == 0:
            notes = _suite_notes(suite, paths.protocol, splits) + split_notes
            result.rows = _write_suite_summary(suite, runs, specs, paths.protocol, notes)
    result.elapsed_s = time.perf_counter() - start
    return result


def _validated_suite(suite: str | Path | Suite, overrides: dict[str, Any] | None) -> Suite:
    """The resolved suite, validated before any work (model names, post-processors, ranges, ...).

    A name or path is loaded and validated by :func:`~clip2video.experiments.suite.load_suite`, as
    is a :class:`Suite` with ``overrides``; a :class:`Suite` passed as is was validated when
    ``load_suite`` / ``suite_from_settings`` built it, unless it was built by hand: it is
    validated here (``load_suite`` passes a Suite without overrides through unchecked).
    """
    if isinstance(suite, Suite) and not overrides:
        validate_settings(suite.settings, f"suite {suite.name!r}")
    return load_suite(suite, overrides)


def _under_torchrun(world: int) -> bool:
    """Rows run one after another in-process when torchrun started several ranks."""
    return world > 1 or "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def _plan_line(suite: Suite, to_run: int, kept: int, distributed: bool, jobs: int, threads: int) -> str:
    """The line announcing what the suite run does."""
    return (
        f"clip2video: suite {suite.name!r}: {to_run} row(s) to run"
        + (f", {kept} kept (--resume)" if kept else "")
        + (
            " one after another (torchrun)"
            if distributed
            else f", {jobs} at a time in worker processes, {threads} torch thread(s) each"
        )
    )


def _write_suite_summary(
    suite: Suite, runs: Path, specs: list[RowSpec], protocol: Protocol, notes: list[str]
) -> dict[str, dict[str, float]]:
    """Write ``suite.json`` (the finished rows in plan order, notes, settings); returns each plain
    row's headline metrics."""
    from clip2video.engine.records import write_suite_info

    rows = _rows_in_order(specs, runs / suite.name)
    headlines = {name: _headline(runs / suite.name / name) for name in rows if "+" not in name}
    write_suite_info(
        runs,
        suite.name,
        protocol=protocol.name,
        rows=rows,
        notes=notes,
        extra={"settings": suite.settings.to_dict()},
    )
    return headlines


def _reporting(on_done: Any, total: int, start: float) -> Any:
    """``on_done`` that also prints one line per finished row (progress when stdout is no terminal)."""
    finished = 0

    def report(spec: RowSpec, error: BaseException | None) -> None:
        nonlocal finished
        finished += 1
        state = "done" if error is None else f"FAILED ({type(error).__name__})"
        elapsed = time.perf_counter() - start
        print(f"clip2video: row {spec.row} {state} ({finished}/{total}, {elapsed:.0f} s)", flush=True)
        on_done(spec, error)

    return report


def _headline(row_dir: Path) -> dict[str, float]:
    """A record's metrics plus its order metrics (the summary's and the tests' view of a row)."""
    from clip2video.engine.records import read_run_record

    record = read_run_record(row_dir)
    order = {k: v for k, v in record.extra.items() if k.startswith("order_") and isinstance(v, int | float)}
    return {**record.metrics, **order}


def _rows_in_order(specs: list[RowSpec], folder: Path) -> list[str]:
    """Each planned row with a finished record, followed by its post-processed rows."""
    rows: list[str] = []
    for spec in specs:
        if (folder / spec.row / "metrics.json").is_file():
            rows.append(spec.row)
            rows.extend(
                sorted(p.name for p in folder.glob(f"{spec.row}+*") if (p / "metrics.json").is_file())
            )
    return rows


def _split_file_notes(paths: DataPaths) -> list[str]:
    """Warn, and footnote the tables, when a split file is not the public one (``data verify``)."""
    from clip2video.data.verify import check_split_files

    proto = paths.protocol
    if not proto.split_sha256 and not proto.split_counts:
        return []
    bad = [c for c in check_split_files(proto, paths.annotations) if not c.ok]
    if not bad:
        return []
    files = "; ".join(
        f"{c.file} ({c.status}: {c.actual_count if c.actual_count is not None else '?'} ids, "
        f"the public file has {c.expected_count if c.expected_count is not None else '?'})"
        for c in bad
    )
    note = (
        f"split files in {paths.annotations} are not the public {proto.name} files: {files}; these "
        f"numbers are not comparable with the published ones "
        f"(`clip2video data verify --protocol {proto.name}` shows the details)"
    )
    warnings.warn(note, stacklevel=3)
    return [note]


def _suite_notes(suite: Suite, proto: Protocol, splits: dict[str, SplitData]) -> list[str]:
    hook = proto.hook("notes")
    notes = list(hook()) if hook is not None else []
    test = splits["test"]
    notes.append(
        f"test split: {test.num_videos} videos, {test.num_captions} captions; tie policy "
        f"{suite['eval']['tie_policy']}, v2t {suite['eval']['v2t']}; model selection: "
        f"{suite['train']['select_on']} epoch"
    )
    return notes


__all__ = ["run_suite", "SuiteResult", "resolve_data", "load_splits", "data_fingerprint", "RowFailed"]
