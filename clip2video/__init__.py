"""clip2video-bench: reproduce and extend CLIP2Video for text-video retrieval.

The notebook API (imported lazily, so ``import clip2video`` stays light):

- :func:`create_model` / :func:`list_models`: the model registry (installed plugins included);
  ``create_model(**model.config)`` rebuilds a model.
- :func:`from_official_checkpoint`: a model from the official code's checkpoint files.
- :func:`evaluate`: ``evaluate(model, "msrvtt-1k-a", data_root="data")`` evaluates a model on a
  protocol's test split and returns its metrics (and, with ``record_dir=``, a run record).
- :func:`list_protocols`: the protocol registry.
- :func:`retrieval_metrics`: R@K, MdR and MnR from a similarity matrix.
- :func:`results`: a suite's recorded results as a pandas DataFrame.

>>> import clip2video
>>> {"meanp", "seqtransf", "tdb", "tab", "clip2video"} <= set(clip2video.list_models())
True
>>> import numpy as np
>>> clip2video.retrieval_metrics(np.eye(2), np.arange(2))["t2v_R1"]
100.0
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "create_model",
    "evaluate",
    "from_official_checkpoint",
    "list_models",
    "list_protocols",
    "results",
    "retrieval_metrics",
]

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_LAZY = {
    "create_model": ("clip2video.models", "create_model"),
    "list_models": ("clip2video.models", "list_models"),
    "from_official_checkpoint": ("clip2video.models", "from_official_checkpoint"),
    "evaluate": ("clip2video.engine.evaluate", "evaluate_protocol"),
    "list_protocols": ("clip2video.data.protocols", "list_protocols"),
    "retrieval_metrics": ("clip2video.metrics", "retrieval_metrics"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clip2video' has no attribute {name!r}")


def results(source: str | Path = "runs", suite: str | None = None) -> pd.DataFrame:
    """A suite's recorded rows as a DataFrame (one row per model; metric columns, intervals where recorded).

    ``source`` is a suite's records folder (``runs/smoke``), a runs folder (with ``suite``, or holding
    one suite), or a suite name looked up under ``./runs``:

    >>> import clip2video, tempfile
    >>> clip2video.results(tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    clip2video.errors.Clip2VideoError: no recorded suite in ...
    """
    from clip2video.engine.records import list_suites
    from clip2video.errors import Clip2VideoError

    path = Path(source)
    if (path / "suite.json").is_file():
        runs_dir, suite = path.parent, suite or path.name
    elif path.is_dir():
        runs_dir = path
        if suite is None:
            found = list_suites(runs_dir)
            if len(found) != 1:
                listed = ", ".join(found) or "none"
                raise Clip2VideoError(
                    f"no recorded suite in {runs_dir} chosen: pass suite=... (recorded: {listed})"
                )
            suite = found[0]
    else:
        runs_dir, suite = Path("runs"), suite or str(source)
    from clip2video.report.tables import results_frame

    return results_frame(runs_dir, suite)
