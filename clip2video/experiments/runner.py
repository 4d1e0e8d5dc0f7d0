"""Run an experiment suite's rows from what the check before work resolved: data -> one worker per row -> records.

The parent process gets a :class:`~clip2video.experiments.preflight.Checked` (the suite, the data
and its splits, the row plan), writes generated data when it is not there yet (then checks it),
fingerprints the data once, decides which rows ``--resume`` keeps, computes the frozen-backbone
features of the ``train.backbone = "frozen"`` rows left to run once per distinct backbone
(:mod:`clip2video.experiments.frozen`), then runs each row in its own worker
(:mod:`clip2video.experiments.row`), ``jobs`` at a time. Everything lands on disk first
(``runs/<suite>/<row>/``: metrics, per-query ranks, the similarity matrix, config, fingerprint,
checkpoints); the parent logs MLflow from those records (:mod:`clip2video.experiments.sync`).
The whole run, check and tables included, is :func:`clip2video.pipeline.run`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clip2video import fingerprint as fp
from clip2video.data.videos import outside_links
from clip2video.engine import distributed as ddp
from clip2video.errors import Clip2VideoError
from clip2video.experiments.frozen import FEATURE_CACHE, FrozenFeatures, backbone_group, is_frozen, run_key
from clip2video.experiments.generation import suite_generation
from clip2video.experiments.options import RunOptions
from clip2video.experiments.preflight import (
    Checked,
    CheckedData,
    CheckFailed,
    Problems,
    auto_jobs,
    check,
    check_data,
    data_check_options,
    resolve_threads,
)
from clip2video.experiments.row import RowData, RowSpec, build_row_model
from clip2video.experiments.suite import ZERO_SHOT_ROW, Suite
from clip2video.experiments.workers import RowFailed, run_rows, run_rows_in_process
from clip2video.plugins import imported_modules
from clip2video.settings import FrozenMapping

# Headline columns of the summary, labelled as in the results tables.
SUMMARY_COLUMNS = {
    "t2v_R1": "t2v R@1",
    "t2v_R5": "t2v R@5",
    "t2v_MnR": "t2v MnR",
    "v2t_R1": "v2t R@1",
    "v2t_R5": "v2t R@5",
    "order_acc": "order acc",
}


@dataclass
class SuiteResult:
    """What a suite run produced: one metrics dict per row, and the files it wrote."""

    suite: Suite
    runs_dir: Path
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    results_files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0
    jobs: int = 1
    verdict: Any = None  # report.verdict.Verdict against the shipped reference, where there is one
    row_of: dict[str, str] = field(default_factory=dict)  # record folder -> its row (name without seed)

    def summary(self) -> str:
        """A short text table of the headline metrics, with the results tables' column names: one
        line per row, the mean over its seeds (the tables give the spread and the intervals)."""
        import pandas as pd
        from tabulate import tabulate

        frame = pd.DataFrame(
            [
                {
                    "row": self.row_of.get(name, name),
                    **{label: m[k] for k, label in SUMMARY_COLUMNS.items() if k in m},
                }
                for name, m in self.rows.items()
            ]
        )
        seeds = frame.groupby("row", sort=False).size().max() if len(frame) else 0
        if len(frame):
            frame = frame.groupby("row", sort=False).mean().reset_index()
        over = f", mean over {seeds} seeds" if seeds > 1 else ""
        head = f"suite {self.suite.name!r} ({self.suite.protocol}) finished in {self.elapsed_s:.0f} s{over}"
        table = tabulate(frame, headers="keys", tablefmt="github", showindex=False, floatfmt=".1f")
        files = f"records: {self.runs_dir / self.suite.name}"
        if self.results_files:
            files += f"\nresults: {self.results_files[0].parent}"
        return f"{head}\n{table}\n{files}"


# ----------------------------------------------------------------------------- data


def prepare_data(checked: Checked) -> Checked:
    """Write generated data the check found absent (rank 0; the other ranks wait), then check it as
    the check before work checks data, once. Data that is there passes through."""
    if not checked.data.pending:
        return checked
    suite, options = checked.suite, checked.options
    rank, _ = ddp.rank_and_world()
    prepare = checked.data.protocol.hook("prepare_data")
    folder = prepare(suite.settings, options.data_root) if rank == 0 else None
    ddp.broadcast_object(str(folder) if folder is not None else None)
    problems = Problems()
    data = check_data(
        suite, options.data_root, problems=problems, **data_check_options(checked.plan, options, suite, rank)
    )
    if problems or data.pending:
        raise CheckFailed(problems.items or [f"{suite.protocol}: the generated data is not complete"])
    return replace(checked, data=data)


def data_fingerprint(data: CheckedData) -> dict[str, Any]:
    """Content hashes of the annotation files and the identity of the videos of the splits the run uses.

    A run that trains covers every file of the annotations folder (as it always did); an evaluation
    leaves out the split files of the splits it does not read. A frame folder's identity covers
    every image inside (``fingerprint.video_identity``), so an overwritten jpg changes it. Computed
    once per suite, in the parent.
    """
    unused = {data.protocol.split_file(s) for s in ("train", "val") if s not in data.uses} - {
        data.protocol.split_file(s) for s in data.uses
    }
    files = sorted(p for p in data.annotations.rglob("*") if p.is_file() and p.name not in unused)
    out: dict[str, Any] = {
        "annotations": {p.relative_to(data.annotations).as_posix(): fp.file_digest(p) for p in files}
    }
    for name, split in data.splits.items():
        if name not in data.video_paths:
            continue  # a split read for its captions only
        out[f"videos.{name}"] = fp.digest(
            [
                [vid, fp.video_identity(p)]
                for vid, p in zip(split.video_ids, data.video_paths[name], strict=True)
            ]
        )
    return out


# ----------------------------------------------------------------------------- the plan


def _checkpoint_identity(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise Clip2VideoError(f"--checkpoint {path} does not exist; pass an existing checkpoint file")
    return {"path": str(path.resolve()), "sha256": fp.file_digest(path)}


def build_specs(checked: Checked, data_fp: dict[str, Any], *, progress: bool) -> list[RowSpec]:
    """One picklable spec per planned row, with its resolved settings, data and fingerprint."""
    options, data = checked.options, checked.data
    row_data = RowData(  # every row gets the splits the check loaded (a worker reads no annotation file)
        protocol=data.protocol.name,
        annotations=str(data.annotations),
        videos=str(data.videos),
        splits=dict(data.splits),
        video_paths={k: tuple(str(p) for p in v) for k, v in data.video_paths.items()},
    )
    ckpt_ids: dict[Path, dict[str, str] | None] = {}
    specs: list[RowSpec] = []
    for planned in checked.plan:
        ckpt = planned.checkpoint
        if ckpt is not None and ckpt not in ckpt_ids:
            ckpt_ids[ckpt] = _checkpoint_identity(ckpt)
        spec = RowSpec(
            suite=checked.suite.name,
            row=planned.name,
            base_row=planned.row,
            variant=planned.variant,
            model=planned.model,
            seed=int(planned.seed),
            trained=planned.trained,
            settings=planned.settings,
            data=row_data,
            runs_dir=str(options.runs_dir),
            device=options.device,
            threads=checked.threads,
            checkpoint=str(ckpt) if ckpt is not None else None,
            checkpoint_id=ckpt_ids.get(ckpt) if ckpt is not None else None,
            clip_weights=options.clip_weights,
            progress=progress,
            imports=imported_modules(),
        )
        fingerprint = {
            "platform": fp.platform_fingerprint(options.device, checked.threads),
            "code": fp.code_version(),
            "settings": fp.digest(spec.row_settings),
            "data": data_fp,
        }
        specs.append(replace(spec, fingerprint=fingerprint))
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


# ----------------------------------------------------------------------------- frozen-backbone features


def prepare_features(
    specs: list[RowSpec], threads: int, *, echo: Callable[[str], None] = print
) -> list[RowSpec]:
    """Compute (or read from the cache) the features of the frozen rows among ``specs``
    (``train.backbone = "frozen"``), once per distinct backbone, and return the specs with each
    frozen row's :class:`~clip2video.experiments.frozen.FrozenFeatures`.

    Runs in the parent after the data is prepared and before any row starts, on the CPU, with
    torch's thread count set to ``threads`` (the rows' resolved ``run.threads``, restored after), so
    the features do not depend on the machine's core count; cached in ``<runs>/.feature-cache/``
    under the backbone, the data, the frame and text settings, the thread count, the kernel set and
    torch's version (:mod:`clip2video.experiments.frozen`). Rows that are not frozen pass through."""
    import torch

    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        if is_frozen(spec):
            groups.setdefault(backbone_group(spec), []).append(i)
    if not groups:
        return specs
    out = list(specs)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        for members in groups.values():
            start = time.perf_counter()
            features, computed = _compute_group(specs[members[0]], threads)
            for i in members:
                out[i] = replace(specs[i], features=features)
            seconds = time.perf_counter() - start
            echo(_features_line(specs[members[0]], features, computed, seconds, len(members), threads))
    finally:
        torch.set_num_threads(before)
    return out


def _compute_group(spec: RowSpec, threads: int) -> tuple[FrozenFeatures, list[str]]:
    """One backbone's features of every split ``spec`` reads, through the cache; the splits that
    were computed (not read from the cache)."""
    from clip2video.data.datasets import resolve_num_workers
    from clip2video.data.frames import FrameSampler
    from clip2video.data.text import CaptionTokenizer
    from clip2video.engine.cache import EmbeddingCache
    from clip2video.engine.features import compute_features

    model = build_row_model(spec)  # the row's own model: its backbone is what the features need
    cache = EmbeddingCache(Path(spec.runs_dir) / FEATURE_CACHE)
    settings = spec.settings
    feats = compute_features(
        model,
        dict(spec.data.splits),
        spec.data.videos,
        FrameSampler.from_settings(settings.frames),
        CaptionTokenizer.from_settings(settings.text),
        cache=cache,
        batch_size=settings.eval.batch_size,
        num_workers=resolve_num_workers(settings.data.num_workers, "cpu", phased=True),
        progress=f"{spec.row_name} backbone" if spec.progress else False,
        key_extra=run_key(threads),
    )
    keys = {name: f.meta["key"] for name, f in feats.items()}
    computed = [name for name, f in feats.items() if f.meta.get("cache") == "miss"]
    return FrozenFeatures(cache=str(cache.root), keys=FrozenMapping(keys)), computed


def _features_line(
    spec: RowSpec, features: FrozenFeatures, computed: list[str], seconds: float, rows: int, threads: int
) -> str:
    splits = ", ".join(features.keys)
    if not computed or len(computed) == len(features.keys):
        how = "computed" if computed else "read from the cache"
    else:
        how = f"computed ({', '.join(computed)}; the rest read from the cache)"
    return (
        f"clip2video: frozen backbone ({_backbone_label(spec)}): features of {splits} {how} in {seconds:.0f} s "
        f"with {threads} torch thread(s), for {rows} row(s); cache {features.cache}"
    )


def _backbone_label(spec: RowSpec) -> str:
    b = spec.settings.backbone
    weights = spec.clip_weights if spec.clip_weights is not None else b.clip_weights
    return f"{b.clip}, {weights}"


# ----------------------------------------------------------------------------- execution


# ----------------------------------------------------------------------------- the suite


def run_checked(checked: Checked) -> SuiteResult:
    """Run every row of a checked suite (:func:`~clip2video.experiments.preflight.check`).

    Rows run in worker processes, ``jobs`` at a time (None: ``[run] jobs``; 0: automatic). Under
    torchrun (``WORLD_SIZE`` set) rows run one after another in-process, every rank training and
    encoding its shard, rank 0 writing records and MLflow runs. ``progress=None`` shows progress
    bars only when stdout is a terminal. ``resume`` keeps rows whose record matches the current
    settings, data and code, and continues an interrupted row whose checkpoint has exactly these
    settings. Generated data the check found absent is written first (:func:`prepare_data`). The
    run holds ``runs_dir/<suite>`` (a second run refuses, or with ``options.wait_lock`` waits) and
    is a new generation of it (:mod:`clip2video.experiments.generation`).
    """
    start = time.perf_counter()
    suite, options = checked.suite, checked.options
    # Video files may be links out of the videos folder only where the suite allows it.
    with outside_links(suite.settings.data.allow_outside_links):
        checked = prepare_data(checked)
        rank, world = ddp.rank_and_world()
        show = sys.stdout.isatty() if options.progress is None else bool(options.progress)
        runs = options.runs_dir
        # The plan: one spec per row.
        specs = build_specs(checked, data_fingerprint(checked.data), progress=show and rank == 0)
        # One writer per runs folder, and this run is a new generation of it (rank 0 holds it).
        with suite_generation(runs, suite.name, enabled=rank == 0, wait=options.wait_lock):
            result = _execute(checked, specs, rank, world, start)
    result.elapsed_s = time.perf_counter() - start
    return result


def _execute(checked: Checked, specs: list[RowSpec], rank: int, world: int, start: float) -> SuiteResult:
    """The rows --resume keeps, the rows run ``jobs`` at a time, MLflow from their records, and the
    suite's row list (``suite.json``, which completes the generation)."""
    from clip2video.experiments.sync import RowLogger

    suite, options, runs = checked.suite, checked.options, checked.options.runs_dir
    to_run, kept = resume_plan(specs) if options.resume else (specs, {})
    # Frozen-backbone rows: their features, once per distinct backbone, before any row starts.
    to_run = prepare_features(to_run, checked.threads, echo=lambda line: print(line, flush=True))
    distributed = _under_torchrun(world)
    n_jobs = suite.settings.run.jobs if options.jobs is None else int(options.jobs)
    n_jobs = auto_jobs(options.device, checked.threads, len(to_run)) if n_jobs <= 0 else n_jobs
    result = SuiteResult(suite=suite, runs_dir=runs, jobs=1 if distributed else n_jobs)
    # Execution: records on disk, MLflow from them; then the suite's row list and notes.
    logger = RowLogger(suite, runs, tracking_uri=options.tracking_uri, enabled=options.tracking and rank == 0)
    with logger:
        logger.ensure_logged(kept.keys())
        done = _reporting(logger.row_done, len(to_run), start) if rank == 0 else logger.row_done
        if rank == 0:
            for note in checked.data.notes:
                warnings.warn(note, stacklevel=2)
            print(_plan_line(suite, len(to_run), len(kept), distributed, n_jobs, checked.threads), flush=True)
        if distributed:
            run_rows_in_process(to_run, done)
        else:
            run_rows(to_run, n_jobs, done)
        if rank == 0:
            notes = _suite_notes(suite, checked.data) + list(checked.data.notes)
            result.rows = _write_suite_summary(suite, runs, specs, checked.data, notes)
            result.row_of = {s.row: s.row_name for s in specs}
    return result


def run_suite(suite: str | Path | Suite, **options: Any) -> SuiteResult:
    """Check the suite before work and run its rows; no tables (:func:`clip2video.pipeline.run_suite`
    adds them). ``options``: the fields of :class:`~clip2video.experiments.options.RunOptions`."""
    options.setdefault("results_dir", None)
    return run_checked(check(RunOptions(suite=suite, **options)))


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
    suite: Suite, runs: Path, specs: list[RowSpec], data: CheckedData, notes: list[str]
) -> dict[str, dict[str, float]]:
    """Write ``suite.json`` (the finished rows in plan order, notes, settings); returns each plain
    row's headline metrics."""
    from clip2video.engine.records import write_suite_info

    rows = _rows_in_order(specs, runs / suite.name)
    headlines = {name: _headline(runs / suite.name / name) for name in rows if "+" not in name}
    write_suite_info(
        runs,
        suite.name,
        protocol=data.protocol.name,
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


def _suite_notes(suite: Suite, data: CheckedData) -> list[str]:
    hook = data.protocol.hook("notes")
    notes = list(hook()) if hook is not None else []
    test = data.splits["test"]
    s = suite.settings
    notes.append(
        f"test split: {test.num_videos} videos, {test.num_captions} captions; tie policy "
        f"{s.eval.tie_policy}, v2t {s.eval.v2t}; model selection: {s.train.select_on} epoch"
    )
    return notes


__all__ = [
    "RowFailed",
    "SuiteResult",
    "ZERO_SHOT_ROW",
    "auto_jobs",
    "build_specs",
    "data_fingerprint",
    "prepare_data",
    "prepare_features",
    "resolve_threads",
    "run_checked",
    "run_suite",
]
