"""Row workers: each (model, seed) row of a suite runs in its own process, ``jobs`` at a time.

Every row gets a fresh process of its own (started from a forkserver where the platform has one,
so torch is imported once), with two pipes to the parent: one carries its result back, the other
only tells it that the parent is alive. So:

- a worker that dies (SIGKILL, as the out-of-memory killer does; a crash) fails only its own row:
  the other rows finish and are recorded, then :class:`RowFailed` names the failed rows and says
  that ``--resume`` continues;
- Ctrl-C, SIGTERM and SIGHUP in the parent stop every worker (their last finished epoch's
  checkpoint stays on disk, resumable), and a worker whose parent died without stopping it (SIGKILL)
  notices its closed pipe and exits: no worker, forkserver or resource tracker is left behind;
- no process pool, queue or semaphore is shared between rows, so nothing is "leaked".
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from clip2video.engine.records import current_generation, writing_generation
from clip2video.errors import Clip2VideoError
from clip2video.experiments.row import RowSpec, run_row_in_worker, run_row_spec

OnDone = Callable[[RowSpec, BaseException | None], None]
STOP_TIMEOUT_S = 10.0  # a worker that ignores SIGTERM this long is killed


class RowFailed(Clip2VideoError):
    """A row's worker process failed; the message names the row."""


class WorkerDied(Clip2VideoError):
    """A row's worker process ended without a result (killed by a signal, or crashed)."""


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver (fast: torch is imported once in the server) where available, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["clip2video.experiments.row", "clip2video.experiments.workers"])
        return ctx
    return multiprocessing.get_context("spawn")


# ----------------------------------------------------------------------------- the worker side


def _exit_when_orphaned(alive: Connection) -> None:
    """Block until the parent's end of ``alive`` closes (the parent exited or died), then exit."""
    try:
        alive.recv()
    except (EOFError, OSError):
        pass
    os._exit(70)  # the parent is gone: nobody will read this row's result


def _worker_main(spec: RowSpec, result: Connection, alive: Connection, generation: int | None) -> None:
    """A worker process: run one row, send ``("ok", path)`` or ``("error", exception)``."""
    threading.Thread(target=_exit_when_orphaned, args=(alive,), daemon=True).start()
    _no_shared_locks()
    from clip2video.data.videos import outside_links

    try:
        with writing_generation(generation), outside_links(_allows_outside_links(spec)):
            message: tuple[str, Any] = ("ok", run_row_in_worker(spec))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        message = ("error", _portable(exc))
    try:
        result.send(message)
    except (OSError, ValueError):
        pass
    finally:
        result.close()


def _no_shared_locks() -> None:
    """tqdm's default lock is a multiprocessing RLock: a semaphore that the resource tracker reports
    as "leaked" when a worker is killed. A row's progress bars need only a thread lock."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _allows_outside_links(spec: RowSpec) -> bool:
    return spec.settings.data.allow_outside_links


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles (and unpickles), else a ``Clip2VideoError`` with its one-line text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to round-trip
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Clip2VideoError(last)


# ----------------------------------------------------------------------------- the parent side


@dataclass
class _Running:
    spec: RowSpec
    process: Any
    result: Connection
    alive: Connection
    slot: int
    message: tuple[str, Any] | None = None


def _slot_device(spec: RowSpec, slot: int, jobs: int) -> RowSpec:
    """Spread rows over GPUs when the device is plain ``cuda`` and several rows run at once: each
    running row holds a slot, and slot k uses ``cuda:k``."""
    if spec.device != "cuda" or jobs <= 1:
        return spec
    return replace(spec, device=f"cuda:{slot}")


def _start(ctx: Any, spec: RowSpec, slot: int, jobs: int) -> _Running:
    result_r, result_w = ctx.Pipe(duplex=False)
    alive_r, alive_w = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_worker_main,
        args=(_slot_device(spec, slot, jobs), result_w, alive_r, current_generation()),
        name=f"clip2video-row-{spec.row}",
        daemon=False,
    )
    try:
        process.start()
    finally:
        result_w.close()  # the worker has its own copies: EOF here means the worker is gone
        alive_r.close()
    return _Running(spec, process, result_r, alive_w, slot)


def _death(process: Any) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = (
            " (as the out-of-memory killer does; lower the batch sizes or --jobs)"
            if -code == signal.SIGKILL
            else ""
        )
        return f"its worker process was killed by {name}{hint}"
    return f"its worker process exited with code {code} without a result"


def _finish(run: _Running) -> BaseException | None:
    """Collect a finished worker: None for a recorded row, else the row's error."""
    run.process.join(timeout=STOP_TIMEOUT_S)
    for conn in (run.result, run.alive):
        conn.close()
    if run.message is not None and run.message[0] == "ok":
        return None
    if run.message is not None:
        error = run.message[1]
        return error if isinstance(error, BaseException) else Clip2VideoError(str(error))
    return WorkerDied(f"row {run.spec.row!r}: {_death(run.process)}")


def run_rows(specs: list[RowSpec], jobs: int, on_done: OnDone) -> None:
    """Run each spec in a fresh worker process, ``jobs`` at a time; ``on_done(spec, error)`` per row.

    Rows are independent: a row that fails (an error, or its worker killed) fails alone; every
    other row still runs and is recorded. Then :class:`RowFailed` names the failed rows (a
    row's own one-line error when only one failed). Ctrl-C / SIGTERM / SIGHUP stop every worker;
    finished rows and checkpoints stay resumable.
    """
    if not specs:
        return
    here = [spec for spec in specs if defined_in_this_session(spec)]
    if here:
        names = sorted({spec.model for spec in here})
        print(
            f"clip2video: model(s) {', '.join(names)} are defined in this session (a notebook or an interactive "
            "interpreter), which worker processes cannot import: their rows run in this process, one after "
            "another, after the others",
            flush=True,
        )
        specs = [spec for spec in specs if all(spec is not h for h in here)]
    specs = [_with_defining_modules(spec) for spec in specs]
    ctx = _mp_context()
    jobs = max(1, int(jobs))
    pending = list(specs)
    running: dict[Connection, _Running] = {}
    failed: list[tuple[RowSpec, BaseException]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                used = {run.slot for run in running.values()}
                slot = next(k for k in range(jobs) if k not in used)
                run = _start(ctx, pending.pop(0), slot, jobs)
                running[run.result] = run
            for conn in wait(list(running)):
                run = running[conn]  # type: ignore[index]
                try:
                    run.message = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    pass  # the worker died without a result: its exit code says how
                del running[conn]  # type: ignore[arg-type]
                error = _finish(run)
                on_done(run.spec, error)
                if error is not None:
                    failed.append((run.spec, error))
    except BaseException:
        _stop_workers(list(running.values()))
        raise
    for spec in here:
        error = _run_here(spec)
        on_done(spec, error)
        if error is not None:
            failed.append((spec, error))
    if failed:
        raise _row_failure(failed, len(specs) + len(here))


def _defining_objects(spec: RowSpec) -> list[Any]:
    """The row's model factory and its protocol's annotation reader (what a worker must find)."""
    from clip2video.data.protocols import get_protocol, get_reader
    from clip2video.models.registry import MODELS

    objects = [MODELS.get(spec.model, None)]
    try:
        objects.append(get_reader(get_protocol(spec.protocol).layout))
    except Clip2VideoError:
        pass
    return [obj for obj in objects if obj is not None]


def _with_defining_modules(spec: RowSpec) -> RowSpec:
    """``spec`` with the modules that define its model and reader added to its imports, so that a
    worker finds what this process registered by a plain ``import my_models`` (a notebook, a script)."""
    import sys

    modules = [getattr(obj, "__module__", None) for obj in _defining_objects(spec)]
    extra = [
        name
        for name in modules
        if name
        and name not in ("__main__", "__mp_main__")
        and not name.startswith("clip2video.")
        and name not in spec.imports
        and getattr(sys.modules.get(name), "__spec__", None) is not None
    ]
    return replace(spec, imports=(*spec.imports, *dict.fromkeys(extra))) if extra else spec


def defined_in_this_session(spec: RowSpec) -> bool:
    """Whether the row's model factory (or its protocol's annotation reader) lives in an
    interactive ``__main__`` (no file: a notebook, ``python -i``), which no worker can import."""
    import sys

    if hasattr(sys.modules.get("__main__"), "__file__"):
        return False
    return any(getattr(obj, "__module__", None) == "__main__" for obj in _defining_objects(spec))


def _run_here(spec: RowSpec) -> BaseException | None:
    """One row in this process (its torch thread count restored afterwards); its error or None."""
    import torch

    from clip2video.data.videos import outside_links

    threads = torch.get_num_threads()
    try:
        with outside_links(_allows_outside_links(spec)):  # the generation: this process's already
            run_row_spec(spec)
    except Clip2VideoError as exc:
        return Clip2VideoError(f"row {spec.row!r}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a row's failure is its own, as in a worker
        return exc
    finally:
        torch.set_num_threads(threads)
    return None


def _row_failure(failed: list[tuple[RowSpec, BaseException]], total: int) -> Clip2VideoError:
    """One error for the failed rows, saying the others are recorded and how to continue."""
    done = total - len(failed)
    tail = (
        f"; the other {done} row(s) finished and are recorded; fix the cause and "
        "`clip2video ablation ... --resume` continues the suite"
        if done
        else "; `clip2video ablation ... --resume` continues the suite"
    )
    if len(failed) == 1:
        spec, error = failed[0]
        text = str(error) if isinstance(error, Clip2VideoError) else f"{type(error).__name__}: {error}"
        if not text.startswith(f"row {spec.row!r}"):
            text = f"row {spec.row!r} failed: {text}"
        return RowFailed(text + tail)
    parts = [
        str(e)
        if isinstance(e, Clip2VideoError) and str(e).startswith(f"row {s.row!r}")
        else f"row {s.row!r}: {e}"
        for s, e in failed
    ]
    return RowFailed(f"{len(failed)} rows failed: " + "; ".join(parts) + tail)


def _stop_workers(runs: list[_Running]) -> None:
    """Stop running workers now (Ctrl-C, SIGTERM): SIGTERM, then SIGKILL after a grace period.
    Their last finished epoch's checkpoint stays on disk."""
    for run in runs:
        if run.process.is_alive():
            run.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for run in runs:
        run.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if run.process.is_alive():
            run.process.kill()
            run.process.join(timeout=STOP_TIMEOUT_S)
        for conn in (run.result, run.alive):
            conn.close()


def run_rows_in_process(specs: list[RowSpec], on_done: OnDone) -> None:
    """Under torchrun: the rows one after another in this process (every rank runs each row)."""
    from clip2video.data.videos import outside_links

    for spec in specs:
        with outside_links(_allows_outside_links(spec)):
            run_row_spec(spec)
        on_done(spec, None)


__all__ = ["run_rows", "run_rows_in_process", "RowFailed", "WorkerDied"]
