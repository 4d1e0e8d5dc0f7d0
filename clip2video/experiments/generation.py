"""A suite run holds its runs folder and is one generation of it.

:func:`suite_generation` wraps the execution of a suite (``run_suite``): it takes the runs
folder's lock (:mod:`clip2video.engine.runs_lock`: one writer per ``runs/<suite>/``), begins a new
generation in ``suite.json`` (:func:`clip2video.engine.records.begin_generation`), makes every
record written meanwhile carry that generation (the parent's and, through
:mod:`clip2video.experiments.workers`, each row worker's), and on the way out records how the
generation ended: ``complete`` when the runner wrote the suite's rows, else ``interrupted``
(Ctrl-C, SIGTERM, SIGHUP) or ``failed`` (with the one-line reason). Readers then never mix the
rows of an unfinished generation with those of the last complete one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clip2video.engine.records import begin_generation, end_generation, writing_generation
from clip2video.engine.runs_lock import RunsLock
from clip2video.errors import Clip2VideoError, Terminated
from clip2video.fileio import safe_name


@contextmanager
def suite_generation(
    runs_dir: str | Path,
    suite: str,
    *,
    enabled: bool = True,
    wait: bool = False,
) -> Iterator[int | None]:
    """Hold ``runs_dir/<suite>`` and run one generation of it; yields its number (None when not
    ``enabled``: the other ranks under torchrun, where rank 0 holds the folder).

    ``wait``: wait for another run holding the folder instead of refusing.
    """
    name = safe_name(suite, "suite name")
    if not enabled:
        yield None
        return
    with RunsLock(Path(runs_dir) / name, wait=wait):
        number = begin_generation(runs_dir, name)
        try:
            with writing_generation(number):
                yield number
        except KeyboardInterrupt as exc:
            how = exc.signame if isinstance(exc, Terminated) else "SIGINT (Ctrl-C)"
            end_generation(runs_dir, name, number, "interrupted", reason=how)
            raise
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, Clip2VideoError) else f"{type(exc).__name__}: {exc}"
            end_generation(runs_dir, name, number, "failed", reason=" ".join(reason.split())[:500])
            raise
        else:
            end_generation(runs_dir, name, number, "failed", reason="the run ended without writing its rows")


__all__ = ["suite_generation"]
