"""How to run a suite: the run options, held once (every verb, ``run_suite`` and notebooks build one).

The suite's own settings live in the suite (``clip2video.settings``); these are what a command line
says beside them: where the data, records and results go, the device, the checkpoints of an
evaluation, tracking, progress, ``--resume`` and the number of rows at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip2video.settings import FrozenMapping, thaw


@dataclass(frozen=True)
class RunOptions:
    """Everything a suite run needs besides the suite file.

    ``suite``: a shipped suite's name, a TOML path, or a :class:`~clip2video.experiments.suite.Suite`.
    ``overrides``: ``--set`` as a nested dict. ``models``: ``--models`` (the plain rows of these
    models, and only the variant rows of these models). ``checkpoints``: row (or model) name ->
    checkpoint file, ``"*"`` for every row. ``results_dir``: where the tables go (None: no tables).
    ``progress``: None = bars when stdout is a terminal. ``jobs``: rows at once (None: the suite's
    ``run.jobs``; 0: automatic). ``decode_videos``: decode every test video fully before work
    (False: open each). ``wait_lock``: when another run holds ``runs_dir/<suite>``, wait for it
    instead of refusing. ``reference``: the folder of shipped reference tables the run is compared
    with after its tables (``<reference>/<suite>[-avx2]/``; None or no such folder: no verdict).
    """

    suite: Any = "ablation"
    overrides: Mapping[str, Any] = field(default_factory=FrozenMapping)
    models: tuple[str, ...] | None = None
    data_root: Path = Path("data")
    clip_weights: str | None = None
    device: str = "cpu"
    eval_only: bool = False
    checkpoints: Mapping[str, Path] = field(default_factory=FrozenMapping)
    runs_dir: Path = Path("runs")
    results_dir: Path | None = Path("results")
    tracking_uri: str | None = None
    tracking: bool = True
    progress: bool | None = None
    resume: bool = False
    jobs: int | None = None
    decode_videos: bool = True
    wait_lock: bool = False
    reference: Path | None = Path("reference")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "overrides", FrozenMapping(thaw(self.overrides or {})))
        set_(
            self, "checkpoints", FrozenMapping({str(k): Path(v) for k, v in (self.checkpoints or {}).items()})
        )
        set_(self, "models", tuple(self.models) if self.models is not None else None)
        set_(self, "data_root", Path(self.data_root))
        set_(self, "runs_dir", Path(self.runs_dir))
        set_(self, "results_dir", Path(self.results_dir) if self.results_dir is not None else None)
        set_(self, "reference", Path(self.reference) if self.reference is not None else None)

    def plain_overrides(self) -> dict[str, Any]:
        """``overrides`` as a plain nested dict, with ``--models`` as the ``models`` setting."""
        out = thaw(self.overrides)
        if self.models is not None:
            out["models"] = list(self.models)
        return out


__all__ = ["RunOptions"]
