"""The check before work: everything a suite run needs, proved before the first row starts, in one report.

:func:`check` resolves the suite (every setting, every variant row's settings, the tables), plans
the rows, and checks the tracking store, the output folders, the device, a dry build of each
distinct model configuration (no weights loaded), every checkpoint (it loads, and its image size
fits the frames), the CLIP weights (a local file exists; an open_clip tag is cached or the hub
answers), and the data: the annotation and video folders, the splits the run uses (only the test
split for an evaluation), every test video decoded fully and every train and validation video
opened with its first frame decoded. It collects every problem before it stops: one
:class:`CheckFailed` lists them all (its message is one line; ``report()`` has one line per
problem). It writes nothing (generated data that is absent is only proved possible to write; a
full list of missing video ids goes to a file only when the check fails) and returns what it
resolved (:class:`Checked`), so the runner does not load the suite, the data or the splits again.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clip2video.data.annotations import SplitData
from clip2video.data.datasets import available_cores
from clip2video.data.protocols import Protocol, data_folders, get_protocol
from clip2video.data.videos import outside_links
from clip2video.errors import (
    Clip2VideoError,
    OutputError,
    WeightsError,
    check_writable_dir,
    describe_os_error,
)
from clip2video.experiments.options import RunOptions
from clip2video.experiments.suite import ZERO_SHOT_MODEL, ZERO_SHOT_ROW, Suite, load_suite
from clip2video.settings import RowDecl, Settings, thaw

# MLflow tracking URI schemes the harness can use (http(s) servers, an SQLite file, database stores).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
# Ids a problem shows before "... and N more" (the full list goes to a file).
SHOWN_IDS = 10
# Post-processors that read the train split's captions (QB-Norm's query bank).
TRAIN_CAPTION_POSTPROCESSORS = ("qbnorm",)


class PreflightError(Clip2VideoError):
    """Something the suite run needs is missing or unusable."""


class CheckFailed(PreflightError):
    """The check before work found problems: ``problems`` lists them, one line each; the message
    is one line (the problem itself when there is one)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems found before any work (listed above); nothing was run"
        super().__init__(message)

    def report(self) -> str:
        """One numbered line per problem (what a verb prints before the error line)."""
        lines = [f"clip2video: the check before work found {len(self.problems)} problem(s):"]
        lines += [f"  {i}. {p}" for i, p in enumerate(self.problems, 1)]
        return "\n".join(lines)


@dataclass
class Problems:
    """Problems collected by the check (it goes on after each)."""

    items: list[str] = field(default_factory=list)

    def add(self, problem: str | BaseException) -> None:
        text = str(problem) if not isinstance(problem, OSError) else describe_os_error(problem)
        if text not in self.items:
            self.items.append(text)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True)
class PlannedRow:
    """One row of one seed: its record folder ``name`` (``<row>`` or ``<row>-s<seed>``), the row's
    name without seed (``row``), its model, seed, whether it trains, its checkpoint, its resolved
    settings and whether it is a variant row (``[[rows]]`` with a name of its own)."""

    name: str
    row: str
    model: str
    seed: int
    trained: bool
    checkpoint: Path | None
    settings: Settings
    variant: bool = False


@dataclass(frozen=True)
class CheckedData:
    """Where the data is, the splits the run uses (loaded once) and their videos' paths.

    ``pending``: generated data (the synthetic protocol) is not there yet; the runner writes it,
    then checks it like any data (``splits`` is empty until then).
    """

    protocol: Protocol
    annotations: Path
    videos: Path
    uses: tuple[str, ...]
    splits: Mapping[str, SplitData] = field(default_factory=dict)
    video_paths: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pending: bool = False


@dataclass(frozen=True)
class Checked:
    """What the check resolved: the suite, the data, the row plan and each row's torch threads."""

    options: RunOptions
    suite: Suite
    data: CheckedData
    plan: tuple[PlannedRow, ...]
    threads: int


# ----------------------------------------------------------------------------- the check


def check(options: RunOptions) -> Checked:
    """Check everything the run needs; CheckFailed listing every problem, or what was resolved."""
    from clip2video.engine import distributed as ddp

    refuse_inside_a_starting_worker()
    suite = resolve_suite(options)  # a suite that does not resolve is one error: nothing to plan
    rank, world = ddp.init_distributed_from_env()
    problems = Problems()
    plan = plan_rows(suite, options, problems)
    if options.tracking:
        _collect(problems, check_tracking_uri, options.tracking_uri)
    _collect(problems, check_writable_dir, options.runs_dir, "runs folder", "--runs-dir")
    if options.results_dir is not None:
        _collect(problems, check_writable_dir, options.results_dir, "results folder", "--results-dir")
    _collect(problems, check_device, options.device)
    check_models(plan, suite, problems)
    check_checkpoints(plan, problems)
    check_clip_weights(plan, options.clip_weights, problems)
    check_frozen_rows(plan, options.clip_weights, world, problems)
    warn_untrained_backbones(plan, options.clip_weights)
    with outside_links(suite.settings.data.allow_outside_links):  # links out of the videos folder
        data = check_data(
            suite, options.data_root, problems=problems, **data_check_options(plan, options, suite, rank)
        )
    if problems:
        raise CheckFailed(problems.items)
    jobs = suite.settings.run.jobs if options.jobs is None else int(options.jobs)
    threads = resolve_threads(suite.settings.run.threads, jobs, options.device, len(plan))
    return Checked(options=options, suite=suite, data=data, plan=tuple(plan), threads=threads)


def resolve_suite(options: RunOptions) -> Suite:
    """The suite with ``--set`` and ``--models`` applied (its file read once)."""
    suite = load_suite(options.suite, options.plain_overrides())
    if isinstance(options.suite, Suite) and not options.plain_overrides():
        from clip2video.experiments.suite import validate_settings

        validate_settings(suite.settings, suite.source)  # a Suite passed as is may be built by hand
    return suite.keep_models(options.models) if options.models is not None else suite


def _collect(problems: Problems, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a harness error or OSError becomes a problem (None returned)."""
    try:
        return fn(*args, **kwargs)
    except (Clip2VideoError, OSError) as exc:
        problems.add(exc)
        return None


# ----------------------------------------------------------------------------- the plan


def plan_rows(suite: Suite, options: RunOptions, problems: Problems | None = None) -> list[PlannedRow]:
    """Every row of every seed, in table order (zero-shot first, then the rows, seed by seed).

    Rows that do not train (the zero-shot row, ``--eval-only`` checkpoints) depend on no seed: they
    run once, with the first seed, and carry no ``-s<seed>`` suffix. ``--checkpoint`` keys name a
    row (a plain row is named after its model) or ``*``.
    """
    problems = problems if problems is not None else Problems()
    checkpoints = dict(options.checkpoints)
    rows = suite.rows
    names = [r.name for r in rows]
    unknown = [k for k in checkpoints if k != "*" and k not in names]
    for key in unknown:
        problems.add(
            PreflightError(
                f"--checkpoint {key}=...: {key!r} is not a row of suite {suite.name!r} (its rows: {', '.join(names)})"
            )
        )
    settings_of = {r.name: _row_settings(suite, r, problems) for r in rows}
    for name in _rows_whose_sims_are_read(
        suite
    ):  # a weights table reads them: kept whatever eval.save_sim says
        if settings_of.get(name) is not None:
            settings_of[name] = settings_of[name].replace(eval=settings_of[name].eval.replace(save_sim=True))
    seeds = list(suite.settings.seeds)
    plan: list[PlannedRow] = []
    for seed in seeds:
        first = seed == seeds[0]
        suffix = "" if len(seeds) == 1 else f"-s{seed}"
        if suite.settings.zero_shot and first:
            plan.append(
                PlannedRow(ZERO_SHOT_ROW, ZERO_SHOT_ROW, ZERO_SHOT_MODEL, seed, False, None, suite.settings)
            )
        for row in rows:
            settings = settings_of[row.name]
            if settings is None:
                continue
            ckpt = checkpoints.get(row.name, checkpoints.get("*"))
            variant = row.name != row.model
            if not options.eval_only:
                plan.append(
                    PlannedRow(row.name + suffix, row.name, row.model, seed, True, ckpt, settings, variant)
                )
            elif first and ckpt is None:
                warnings.warn(
                    f"evaluation only: no checkpoint for {row.name!r}; its row is skipped", stacklevel=2
                )
            elif first:
                plan.append(PlannedRow(row.name, row.name, row.model, seed, False, ckpt, settings, variant))
    if options.eval_only and not plan and not unknown:
        problems.add(
            PreflightError(
                f"--eval-only with no --checkpoint for any row of suite {suite.name!r} ({', '.join(names)}) "
                "and no zero-shot row: nothing to evaluate; pass --checkpoint ROW=FILE (or one FILE for every row)"
            )
        )
    return plan


def _rows_whose_sims_are_read(suite: Suite) -> set[str]:
    """The rows a ``kind = "weights"`` table recomputes from their stored similarity parts."""
    return {t.row for t in suite.settings.tables if t.kind == "weights" and t.row}


def _row_settings(suite: Suite, row: RowDecl, problems: Problems) -> Settings | None:
    try:
        return suite.row_settings(row)
    except Clip2VideoError as exc:
        problems.add(exc)
        return None


def data_check_options(
    plan: Iterable[PlannedRow], options: RunOptions, suite: Suite, rank: int = 0
) -> dict[str, Any]:
    """What :func:`check_data` checks for this plan: the splits it uses, which of them need no video
    (a post-processor's caption bank), how deeply videos are checked, where id lists go."""
    plan = list(plan)
    uses = splits_used(plan)
    trains = any(p.trained for p in plan)
    return {
        "uses": uses,
        "captions_only": () if trains else tuple(s for s in uses if s != "test"),
        "decode_videos": options.decode_videos,
        "open_videos": rank == 0,
        "progress": bool(options.progress),
        "lists_dir": options.runs_dir / suite.name,  # the full id lists of a failed check
    }


def splits_used(plan: Iterable[PlannedRow]) -> tuple[str, ...]:
    """The splits a run reads: test; train (and val) when a row trains; train's captions for a
    post-processor that banks them (QB-Norm)."""
    plan = list(plan)
    if any(p.trained for p in plan):
        return ("train", "val", "test")
    if any(set(p.settings.eval.postprocess) & set(TRAIN_CAPTION_POSTPROCESSORS) for p in plan):
        return ("train", "test")
    return ("test",)


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


# ----------------------------------------------------------------------------- outputs and device


def refuse_inside_a_starting_worker() -> None:
    """A row worker re-imports the script that started the suite (Python's ``spawn``/``forkserver``
    semantics); a script that runs a suite at import time would run it again in every worker."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise Clip2VideoError(
            "a row worker is importing the script that started this suite, and the script starts the suite "
            'again at import time; put the call under `if __name__ == "__main__":` (a notebook needs nothing)'
        )


def check_tracking_uri(uri: str | None) -> None:
    """A scheme MLflow can use, a reachable server / an existing writable SQLite folder."""
    from clip2video.tracking import check_tracking_server, default_tracking_uri

    uri = uri or default_tracking_uri()
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(
            f"--tracking-uri {uri}: unsupported scheme {scheme + '://' if scheme else '(none)'}; use "
            "sqlite:///path/mlruns.db, http(s)://host:port of an MLflow server, or pass --no-tracking"
        )
    check_tracking_server(uri)
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :])
        check_writable_dir(db.parent, f"MLflow store folder (of {uri})", "--tracking-uri")
        if db.exists() and not db.is_file():
            raise OutputError(f"--tracking-uri {uri}: {db} is a folder, not an SQLite file")


def check_device(device: str) -> None:
    """``--device cuda`` (or ``cuda:N``) needs a CUDA device this torch can see."""
    if not device.startswith("cuda"):
        if device not in ("cpu", "mps") and not device.startswith(("cpu:", "mps:")):
            raise PreflightError(f"--device {device}: use cpu, cuda or cuda:N")
        return
    import torch

    if not torch.cuda.is_available():
        raise PreflightError(
            f"--device {device}: torch {torch.__version__} sees no CUDA device here"
            f"{' (a CPU-only build)' if torch.version.cuda is None else ''}; pass --device cpu or run on a GPU machine"
        )
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise PreflightError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )


# ----------------------------------------------------------------------------- models and weights


def model_kwargs(settings: Settings, clip_weights: str | None) -> dict[str, Any]:
    """``create_model`` keyword arguments of a row: its backbone and ``[model]`` options."""
    backbone = settings.backbone
    clip: Any = thaw(backbone.config) if backbone.clip == "tiny" else backbone.clip
    weights = clip_weights if clip_weights is not None else backbone.clip_weights
    return {
        "clip": clip,
        "clip_weights": None if weights in ("none", "", None) else weights,
        **settings.model.to_dict(),
    }


def check_models(plan: Iterable[PlannedRow], suite: Suite, problems: Problems) -> None:
    """A dry build (on torch's meta device: no memory, no weights) of each distinct model config of
    the rows that build one, so that a head/width error (e.g. a width that gives 0 heads) appears
    now; the rows a weights table reweights must have two similarity parts (TAB)."""
    import torch

    from clip2video.models.registry import create_model_from_options

    built: dict[str, Any] = {}
    tab_rows = {t.row for t in suite.settings.tables if t.kind == "weights"}
    for row in plan:
        if row.checkpoint is not None:  # its model comes from the checkpoint (check_checkpoints)
            continue
        options = {**model_kwargs(row.settings, None), "clip_weights": None}
        key = repr((row.model, options))
        if key not in built:
            try:
                with torch.device("meta"):
                    built[key] = create_model_from_options(row.model, options)
            except Exception as exc:  # noqa: BLE001 - a constructor may raise anything; name the row
                built[key] = None
                problems.add(
                    PreflightError(
                        f"row {row.row!r} (model {row.model!r}) cannot be built from its settings: "
                        f"{type(exc).__name__}: {_first_line(exc)}; fix [model] / [backbone.config]"
                    )
                )
        model = built[key]
        if model is not None and row.settings.train.backbone == "frozen" and not _has_clip_backbone(model):
            problems.add(
                PreflightError(
                    f"row {row.row!r}: train.backbone = 'frozen' trains heads on the features of the harness's "
                    f"CLIP backbone, but model {row.model!r} has none (no `clip` module); run it fine-tuned: "
                    'a variant row with set = {"train.backbone" = "finetune"}, or --set train.backbone=finetune'
                )
            )
        if model is not None and row.row in tab_rows and getattr(model, "tab", None) is None:
            problems.add(
                PreflightError(
                    f"a weights table reweights row {row.row!r}, but its model {row.model!r} has one "
                    "similarity part (no TAB); name a tab or clip2video row"
                )
            )
            tab_rows.discard(row.row)


def _has_clip_backbone(model: Any) -> bool:
    """Whether ``model`` holds the harness's CLIP backbone (what frozen-backbone features come from)."""
    import torch

    return isinstance(getattr(model, "clip", None), torch.nn.Module)


def check_checkpoints(plan: Iterable[PlannedRow], problems: Problems) -> None:
    """Every ``--checkpoint`` loads into its row's model and takes the row's frame size."""
    seen: set[tuple[str, Path]] = set()
    for row in plan:
        if row.checkpoint is None or (row.model, row.checkpoint) in seen:
            continue
        seen.add((row.model, row.checkpoint))
        model = _collect(problems, load_checkpoint_into, row.model, Path(row.checkpoint), row.settings)
        if model is not None:
            _collect(problems, check_frame_size, model, row.settings.frames.image_size, row.checkpoint)


def load_checkpoint_into(model: str, path: Path, settings: Settings | Suite) -> Any:
    """Load ``path`` the way an eval-only row does (the models' loader); WeightsError naming the file."""
    if isinstance(settings, Suite):
        settings = settings.settings
    if not path.is_file():
        raise WeightsError(
            f"--checkpoint {path} (for model {model!r}): "
            + ("is a folder, not a file" if path.is_dir() else "file does not exist")
        )
    import torch

    from clip2video.models import from_official_checkpoint

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise WeightsError(f"--checkpoint {path} (model {model!r}): {describe_os_error(exc)}") from exc
    except Exception as exc:  # random bytes, text, a truncated zip: torch's advice runs to many lines
        raise WeightsError(
            f"--checkpoint {path} (model {model!r}) is not a PyTorch checkpoint that torch.load can read "
            f"({type(exc).__name__}: {_first_sentence(exc)}); pass a checkpoint written by this harness or an "
            "official CLIP2Video/CLIP4Clip one"
        ) from exc
    try:
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # a checkpoint written by this harness' trainer
        if not isinstance(state, dict):
            raise WeightsError(
                f"--checkpoint {path} (model {model!r}) holds a {type(state).__name__}, not a state dict "
                "(pass a checkpoint written by this harness or an official CLIP2Video/CLIP4Clip one)"
            )
        return from_official_checkpoint(state, variant=model, center_weight=settings.model.center_weight)
    except Clip2VideoError as exc:
        message = str(exc)
        raise WeightsError(
            message if str(path) in message else f"--checkpoint {path} (model {model!r}): {message}"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"--checkpoint {path} (model {model!r}): {describe_os_error(exc)}") from exc
    except Exception as exc:  # torch.load / load_state_dict raise many kinds, with multi-line advice
        raise WeightsError(
            f"--checkpoint {path} (model {model!r}) does not load: {type(exc).__name__}: {_first_line(exc)[:300]}; "
            "pass a checkpoint written by this harness or an official CLIP2Video/CLIP4Clip one of this model"
        ) from exc


def check_frame_size(model: Any, image_size: int, source: Any = None) -> None:
    """Frames must be the size the model's CLIP backbone takes (``model.clip.visual.image_size``;
    a model without an open_clip backbone is not checked)."""
    size = getattr(getattr(getattr(model, "clip", None), "visual", None), "image_size", None)
    if size is None:
        return
    side = int(size[0] if isinstance(size, tuple | list) else size)
    if side != int(image_size):
        what = f"the checkpoint {source}" if source is not None else "the model's CLIP backbone"
        raise PreflightError(
            f"frames.image_size = {image_size} but {what} takes {side} px images; "
            f"pass --set frames.image_size={side} (or a backbone made for {image_size} px frames)"
        )


def check_clip_weights(plan: Iterable[PlannedRow], clip_weights: str | None, problems: Problems) -> None:
    """The CLIP weights of every row that builds its model from settings (not from a checkpoint):
    a shipped backbone's file is there with its checksum (``shipped``, ``shipped:<name>``); a local
    file exists; an open_clip tag (``openai``) is cached or can be downloaded now."""
    from clip2video.models import shipped
    from clip2video.models.backbone import check_pretrained, is_url_or_tag, resolve_activation

    seen: set[tuple[str, str]] = set()
    for row in plan:
        if row.checkpoint is not None:
            continue
        backbone = row.settings.backbone
        weights = clip_weights if clip_weights is not None else backbone.clip_weights
        if weights in (None, "", "none") or (backbone.clip, weights) in seen:
            continue
        seen.add((backbone.clip, weights))
        flag = "--clip-weights" if clip_weights is not None else "backbone.clip_weights"
        try:
            name = shipped.shipped_weights_name(backbone.clip, weights)
        except WeightsError as exc:
            problems.add(WeightsError(f"{flag}: {exc}"))
            continue
        if name is not None:
            if _collect(problems, shipped.checked_weights_file, name) is None:
                continue
        elif not is_url_or_tag(weights):
            if not Path(weights).is_file():
                problems.add(
                    WeightsError(
                        f"{flag} {weights}: no such file; pass 'openai', 'none' or the path of ViT-B-32.pt "
                        "(or an open_clip checkpoint)"
                    )
                )
                continue
        elif backbone.clip == "tiny":
            problems.add(
                WeightsError(
                    f"{flag} {weights!r} is an open_clip tag, but backbone.clip = 'tiny' has none; pass "
                    "--clip-weights none (random init) or name an open_clip model (--set backbone.clip=ViT-B-32-quickgelu)"
                )
            )
            continue
        else:
            try:
                check_pretrained(backbone.clip, weights)
            except WeightsError as exc:
                problems.add(WeightsError(f"{exc}; on the command line: --clip-weights FILE"))
                continue
        clip = thaw(backbone.config) if backbone.clip == "tiny" else backbone.clip
        _collect(problems, resolve_activation, clip, weights)


def check_frozen_rows(
    plan: Iterable[PlannedRow], clip_weights: str | None, world: int, problems: Problems
) -> None:
    """Rows that train with ``train.backbone = "frozen"`` need pretrained backbone weights (a random
    frozen backbone learns nothing), build their model from settings (not from a ``--checkpoint``)
    and run one process per row (not under torchrun)."""
    frozen = [r for r in plan if r.trained and r.settings.train.backbone == "frozen"]
    weights = {
        r.row: clip_weights if clip_weights is not None else r.settings.backbone.clip_weights for r in frozen
    }
    random = sorted({r.row for r in frozen if weights[r.row] in ("", "none")})
    if random:
        problems.add(
            PreflightError(
                f"train.backbone = 'frozen' with backbone.clip_weights = 'none' (row(s) {', '.join(random)}): a "
                "random frozen backbone learns nothing; name pretrained weights (e.g. backbone.clip = "
                "'tiny-synthetic' with clip_weights = 'shipped', a weights file, or 'openai'; --clip-weights FILE) "
                "or use train.backbone = 'finetune'"
            )
        )
    from_checkpoint = sorted({r.row for r in frozen if r.checkpoint is not None})
    if from_checkpoint:
        problems.add(
            PreflightError(
                f"train.backbone = 'frozen' does not train from a --checkpoint (row(s) {', '.join(from_checkpoint)}): "
                "the suite's features come from its [backbone] settings; drop --checkpoint for these rows "
                "or use train.backbone = 'finetune'"
            )
        )
    if frozen and world > 1:
        problems.add(
            PreflightError(
                "train.backbone = 'frozen' rows run one process per row on the features computed once per "
                "suite, not under torchrun; run the suite without torchrun (rows at once: --jobs N)"
            )
        )


def warn_untrained_backbones(plan: Iterable[PlannedRow], clip_weights: str | None) -> None:
    """Warn when a randomly initialised backbone trains at ``lr * coef_lr`` with ``coef_lr < 1``:
    the paper's small backbone rate is for pretrained weights; from scratch it barely trains."""
    for row in plan:
        weights = clip_weights if clip_weights is not None else row.settings.backbone.clip_weights
        coef = row.settings.train.coef_lr
        frozen = row.settings.train.backbone == "frozen"  # refused by check_frozen_rows instead
        if row.trained and row.checkpoint is None and weights in ("", "none") and coef < 1 and not frozen:
            warnings.warn(
                f"row {row.row!r} trains a backbone without pretrained weights at lr x coef_lr = "
                f"{row.settings.train.lr:g} x {coef:g}: from scratch it barely trains; pass --set "
                "train.coef_lr=1.0 (or pretrained weights)",
                stacklevel=2,
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    if text.startswith("Weights only load failed."):
        text = "not a plain tensor/state-dict pickle"
    return text.split(". ")[0][:limit] or "no message"


# ----------------------------------------------------------------------------- data


def data_location(suite: Suite, data_root: str | Path) -> tuple[Protocol, Path | None, bool]:
    """(protocol, the data folder or None, whether it is there) without writing anything.

    A protocol with generated data (a ``prepare_data`` hook) names its folder (``data_folder``)
    and says whether it is complete (``data_ready``); others are found under ``data_root``.
    """
    protocol = get_protocol(suite.protocol)
    if protocol.hook("prepare_data") is None:
        return protocol, None, True
    folder_hook, ready_hook = protocol.hook("data_folder"), protocol.hook("data_ready")
    if folder_hook is None or ready_hook is None:  # a plugin's generator: the runner will run it
        return protocol, None, False
    settings = suite.settings  # typed; a plugin's hooks may read it as the plain mapping too
    return protocol, Path(folder_hook(settings, data_root)), bool(ready_hook(settings, data_root))


def check_data(
    suite: Suite,
    data_root: str | Path,
    *,
    uses: tuple[str, ...],
    problems: Problems,
    decode_videos: bool = True,
    open_videos: bool = True,
    progress: bool = False,
    lists_dir: Path | None = None,
    captions_only: tuple[str, ...] = (),
) -> CheckedData:
    """The annotation and video folders, the splits ``uses`` names (each loaded once) and their
    videos: test decoded fully (``decode_videos``; else opened), train and val opened with their
    first frame decoded (``captions_only`` splits: their captions, no video). Missing or unreadable
    test and val videos are dropped (and recorded) with ``data.allow_missing``; otherwise each is a
    problem."""
    root = Path(data_root)
    try:
        protocol, folder, ready = data_location(suite, root)
    except Clip2VideoError as exc:
        problems.add(exc)
        protocol = get_protocol(suite.protocol)
        return CheckedData(protocol, root, root, uses, pending=True)
    uses = tuple(s for s in uses if protocol.split_file(s) is not None)
    if protocol.hook("prepare_data") is not None:
        base = folder if folder is not None else root
        if not ready:
            _collect(
                problems,
                check_writable_dir,
                base.parent if folder is not None else root,
                "data root",
                "--data-root",
            )
            return CheckedData(protocol, base / "annotations", base / "videos", uses, pending=True)
        annotations, videos = base / "annotations", base / "videos"
    else:
        data = suite.settings.data
        annotations, videos = data_folders(protocol, root, annotations=data.annotations, videos=data.videos)
    missing_folder = False
    for what, path in (("annotations", annotations), ("videos", videos)):
        if not path.is_dir():
            missing_folder = True
            problems.add(
                PreflightError(
                    f"suite {suite.name!r} (protocol {protocol.name}): the {what} folder {path} does not exist; "
                    f"pass --data-root DIR holding {protocol.name}/ (or {protocol.subfolder or protocol.name}/) "
                    f"with annotations/ and videos/, or --set data.{what}=PATH"
                )
            )
    if missing_folder:
        return CheckedData(protocol, annotations, videos, uses)
    splits = load_used_splits(protocol, annotations, uses, problems)
    splits, video_paths = check_videos(
        suite,
        splits,
        videos,
        problems,
        decode_videos=decode_videos,
        open_videos=open_videos,
        progress=progress,
        lists_dir=lists_dir,
        captions_only=captions_only,
    )
    notes = split_file_notes(protocol, annotations, uses)
    return CheckedData(protocol, annotations, videos, uses, splits, video_paths, tuple(notes))


def load_used_splits(
    protocol: Protocol, annotations: Path, uses: Iterable[str], problems: Problems
) -> dict[str, SplitData]:
    """Each split of ``uses`` read once; a split that does not load is a problem naming the file."""
    from clip2video.data.annotations import load_split

    splits: dict[str, SplitData] = {}
    for name in uses:
        try:
            splits[name] = load_split(protocol, annotations, name)
        except Clip2VideoError as exc:
            problems.add(
                PreflightError(
                    f"{name} split: {exc}".replace(
                        "(--annotations)",
                        "(--data-root DIR holding annotations/, or --set data.annotations=DIR)",
                    )
                )
            )
    return splits


def check_videos(
    suite: Suite,
    splits: dict[str, SplitData],
    videos: Path,
    problems: Problems,
    *,
    decode_videos: bool,
    open_videos: bool,
    progress: bool,
    lists_dir: Path | None,
    captions_only: tuple[str, ...] = (),
) -> tuple[dict[str, SplitData], dict[str, tuple[Path, ...]]]:
    """Find every video of each split (``captions_only`` splits: none) and open it: test fully
    decoded (``decode_videos``), train and val their first frame. Returns the splits (test and val
    without their dropped videos under ``data.allow_missing``) and each split's video paths."""
    from clip2video.data.verify import VideoProblem
    from clip2video.data.verify import check_videos as find_and_open

    allow_missing = suite.settings.data.allow_missing
    kept: dict[str, SplitData] = {}
    paths: dict[str, tuple[Path, ...]] = {}
    for name, split in splits.items():
        if name in captions_only:
            kept[name] = split
            continue
        full = name == "test" and decode_videos
        missing, unreadable = find_and_open(
            split, videos, open_videos=open_videos, progress=progress, full_decode=full
        )
        bad: list[VideoProblem] = missing + unreadable
        if bad and allow_missing and name != "train":
            split = split.drop_missing(p.video_id for p in bad)
        elif missing:
            problems.add(_missing_videos(split, name, [p.video_id for p in missing], videos, lists_dir))
        if unreadable and not (allow_missing and name != "train"):
            problems.add(_unreadable_videos(split, name, unreadable))
        kept[name] = split
        if not (missing or unreadable) or (allow_missing and name != "train"):
            from clip2video.data.videos import lookup_videos

            found = lookup_videos(videos, split.video_ids)
            paths[name] = tuple(found[vid] for vid in split.video_ids)  # type: ignore[misc]
    return kept, paths


def _missing_videos(split: SplitData, name: str, ids: list[str], videos: Path, lists_dir: Path | None) -> str:
    shown = ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")
    listing = _write_id_list(ids, lists_dir, f"missing-{name}-videos.txt") if len(ids) > SHOWN_IDS else ""
    drop = (
        ""
        if name == "train"
        else "; or pass --set data.allow_missing=true to drop them (the drop is recorded)"
    )
    return (
        f"{len(ids)} of {split.num_videos} {split.protocol} {name} video(s) are missing in {videos}: {shown}"
        f"{listing}; add them or point --data-root (or --set data.videos=DIR) at the folder that holds them{drop}"
    )


def _unreadable_videos(split: SplitData, name: str, bad: list[Any]) -> str:
    shown = "; ".join(f"{p.video_id} ({p.path}: {p.reason})" for p in bad[:SHOWN_IDS])
    more = f"; and {len(bad) - SHOWN_IDS} more" if len(bad) > SHOWN_IDS else ""
    drop = (
        ""
        if name == "train"
        else "; or pass --set data.allow_missing=true to drop them (the drop is recorded)"
    )
    return f"{len(bad)} {split.protocol} {name} video(s) cannot be decoded: {shown}{more}; replace them{drop}"


def _write_id_list(ids: list[str], folder: Path | None, filename: str) -> str:
    """Write every id to ``folder/filename``; the message part naming it (or why it is not there)."""
    if folder is None:
        return ""
    from clip2video.fileio import atomic_write_text

    target = folder / filename
    try:
        atomic_write_text(target, "".join(f"{i}\n" for i in ids))
    except (OSError, Clip2VideoError) as exc:
        reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        return f" (the full list could not be written: {reason})"
    return f" (full list: {target})"


def split_file_notes(protocol: Protocol, annotations: Path, uses: Iterable[str]) -> list[str]:
    """Warn, and footnote the tables, when a split file the run uses is not the public one."""
    from clip2video.data.verify import check_split_files

    if not protocol.split_sha256 and not protocol.split_counts:
        return []
    used = {protocol.split_file(s) for s in uses}
    bad = [c for c in check_split_files(protocol, annotations) if not c.ok and c.file in used]
    if not bad:
        return []
    files = "; ".join(
        f"{c.file} ({c.status}: {c.actual_count if c.actual_count is not None else '?'} ids, "
        f"the public file has {c.expected_count if c.expected_count is not None else '?'})"
        for c in bad
    )
    return [
        f"split files in {annotations} are not the public {protocol.name} files: {files}; these "
        f"numbers are not comparable with the published ones "
        f"(`clip2video data verify --protocol {protocol.name}` shows the details)"
    ]


def with_data(checked: Checked, data: CheckedData) -> Checked:
    """``checked`` with the data the runner prepared and checked."""
    return replace(checked, data=data)


__all__ = [
    "CheckFailed",
    "Checked",
    "CheckedData",
    "PlannedRow",
    "PreflightError",
    "Problems",
    "auto_jobs",
    "check",
    "check_data",
    "model_kwargs",
    "plan_rows",
    "resolve_threads",
    "splits_used",
]
