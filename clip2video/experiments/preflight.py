"""Check everything a suite run needs before the first row trains, so a run that will fail fails in seconds.

:func:`check_before_work` loads and validates the whole resolved suite (:func:`load_suite` checks
model names, enums, ranges, post-processors and seeds), then checks the tracking URI, that every
output folder (runs, results, the data root for generated data, the MLflow store's folder) is
writable, that every ``--checkpoint`` names a model of the suite and loads into it, that every
training video exists and that every validation and test video decodes fully. Each failure is a
:class:`~clip2video.errors.Clip2VideoError` naming the file, key or id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clip2video.data.videos import outside_links
from clip2video.errors import (
    Clip2VideoError,
    OutputError,
    WeightsError,
    check_writable_dir,
    describe_os_error,
)
from clip2video.experiments.suite import Suite, load_suite

# MLflow tracking URI schemes the harness can use (http(s) servers, an SQLite file, database stores).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")


class PreflightError(Clip2VideoError):
    """Something the suite run needs is missing or unusable."""


def check_before_work(
    suite: str | Path | Suite,
    *,
    overrides: dict[str, Any] | None = None,
    data_root: str | Path = "data",
    clip_weights: str | None = None,
    eval_only: bool = False,
    checkpoints: dict[str, Path] | None = None,
    runs_dir: str | Path = "runs",
    results_dir: str | Path | None = "results",
    tracking_uri: str | None = None,
    tracking: bool = True,
    decode_videos: bool = True,
    progress: bool = False,
) -> Suite:
    """Validate ``suite`` and everything its run touches; returns the resolved suite."""
    resolved = load_suite(suite, overrides)  # a Suite passes through, with the overrides applied
    if tracking:
        check_tracking_uri(tracking_uri)
    check_writable_dir(runs_dir, "runs folder", "--runs-dir")
    if results_dir is not None:
        check_writable_dir(results_dir, "results folder", "--results-dir")
    check_checkpoints(resolved, checkpoints or {}, eval_only=eval_only, clip_weights=clip_weights)
    check_clip_weights(resolved, clip_weights)
    with outside_links(resolved["data"]["allow_outside_links"]):  # links out of the videos folder
        check_data(
            resolved, data_root, training=not eval_only, decode_videos=decode_videos, progress=progress
        )
    return resolved


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


def check_checkpoints(
    suite: Suite, checkpoints: dict[str, Path], *, eval_only: bool, clip_weights: str | None
) -> None:
    """Every ``--checkpoint`` names a model of the suite (or all), exists and loads into its model."""
    unknown = [name for name in checkpoints if name != "*" and name not in suite.models]
    if unknown:
        raise PreflightError(
            f"--checkpoint {unknown[0]}=...: {unknown[0]!r} is not a model of suite {suite.name!r} "
            f"(its models: {', '.join(suite.models)})"
        )
    rows = [m for m in suite.models if m in checkpoints or "*" in checkpoints]
    if eval_only and not rows and not suite["zero_shot"]:
        raise PreflightError(
            f"--eval-only with no --checkpoint for any model of suite {suite.name!r} "
            f"({', '.join(suite.models)}) and no zero-shot row: nothing to evaluate; pass "
            "--checkpoint MODEL=FILE (or one FILE for every model)"
        )
    for model in rows:
        load_checkpoint_into(model, Path(checkpoints.get(model, checkpoints.get("*"))), suite)


def load_checkpoint_into(model: str, path: Path, suite: Suite) -> None:
    """Load ``path`` the way an eval-only row does (the models' loader); WeightsError naming the file."""
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
        from_official_checkpoint(state, variant=model, center_weight=suite["model"]["center_weight"])
    except Clip2VideoError as exc:
        message = str(exc)
        raise WeightsError(
            message if str(path) in message else f"--checkpoint {path} (model {model!r}): {message}"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"--checkpoint {path} (model {model!r}): {describe_os_error(exc)}") from exc
    except Exception as exc:  # torch.load / load_state_dict raise many kinds, with multi-line advice
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(
            f"--checkpoint {path} (model {model!r}) does not load: {type(exc).__name__}: {first[:300]}; "
            "pass a checkpoint written by this harness or an official CLIP2Video/CLIP4Clip one of this model"
        ) from exc


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    if text.startswith("Weights only load failed."):
        text = "not a plain tensor/state-dict pickle"
    return text.split(". ")[0][:limit] or "no message"


def check_clip_weights(suite: Suite, clip_weights: str | None) -> None:
    """A local ``--clip-weights`` / ``backbone.clip_weights`` file exists (its contents: the model loader's check)."""
    weights = clip_weights if clip_weights is not None else suite["backbone"]["clip_weights"]
    if weights in (None, "", "none", "openai"):
        return
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"--clip-weights {weights}: no such file; pass 'openai', 'none' or the path of ViT-B-32.pt "
            "(or an open_clip checkpoint)"
        )


def check_data(
    suite: Suite,
    data_root: str | Path,
    *,
    training: bool = True,
    decode_videos: bool = True,
    progress: bool = False,
) -> None:
    """Annotations parse, training videos exist (when a row trains), validation and test videos decode fully."""
    from clip2video.data.annotations import load_split
    from clip2video.data.verify import require_split_videos_exist, require_test_videos
    from clip2video.experiments.runner import resolve_data

    root = Path(data_root)
    try:
        paths = resolve_data(suite, root)
    except OSError as exc:
        raise OutputError(
            f"data root {root} (--data-root): cannot write the {suite.protocol} data there: "
            f"{describe_os_error(exc)}"
        ) from exc
    proto = paths.protocol
    allow_missing = suite["data"]["allow_missing"]
    train = load_split(proto, paths.annotations, "train")
    if training:
        require_split_videos_exist(train, paths.videos)
    for split in ("val", "test") if proto.val_split else ("test",):
        require_test_videos(
            load_split(proto, paths.annotations, split),
            paths.videos,
            allow_missing=allow_missing,
            open_videos=True,
            full_decode=decode_videos,
            progress=progress,
        )
