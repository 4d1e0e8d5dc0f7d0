"""One writer per runs folder: an advisory lock (``fcntl.flock``) on ``runs/<suite>/``.

``runs/<suite>/.lock`` is the locked file (never replaced or removed, so every process locks the
same inode); ``runs/<suite>/.lock-holder.json`` says who holds it (PID, host, start time, command),
written atomically after the lock is taken and removed when it is released. The operating system
releases a lock when its process dies, however it dies; a holder file left behind by a process
that died is therefore stale: the next run takes the lock over and says whose it was.

A second run on the same folder refuses with one line naming the holder, or (``wait=True``)
waits for it. Where ``fcntl`` is missing (Windows) the lock is a no-op with a warning.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from clip2video.errors import Clip2VideoError
from clip2video.fileio import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock-holder.json"


class RunsFolderBusy(Clip2VideoError):
    """Another process holds the runs folder's lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a runs folder's lock."""

    pid: int
    host: str
    started: str
    command: str = ""

    def describe(self) -> str:
        command = f" ({self.command})" if self.command else ""
        return f"PID {self.pid} on host {self.host}, started {self.started}{command}"

    @classmethod
    def of_this_process(cls) -> Holder:
        from datetime import UTC, datetime

        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            command=" ".join(["clip2video", *sys.argv[1:]])[:300],
        )


def read_holder(folder: str | Path) -> Holder | None:
    """The holder file's content (None when absent or unreadable)."""
    try:
        data: Any = json.loads((Path(folder) / HOLDER_FILE).read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lock_holder(folder: str | Path) -> Holder | None:
    """Who holds ``folder``'s lock now, or None when nobody does (a probe; takes nothing)."""
    path = Path(folder) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(folder) or Holder(0, "?", "?", "its holder file is not written yet")
    finally:
        os.close(fd)
    return None


class RunsLock:
    """``with RunsLock(runs / suite):`` holds the folder's lock (refuses, or with ``wait`` waits,
    when another process holds it; takes over, and reports, a stale one)."""

    def __init__(self, folder: str | Path, *, wait: bool = False, wait_hint: str = "--wait-for-lock") -> None:
        self.folder = Path(folder)
        self.wait = wait
        self.wait_hint = wait_hint
        self._fd: int | None = None
        self.took_over: Holder | None = None

    def acquire(self) -> RunsLock:
        if fcntl is None:  # pragma: no cover - Windows
            warnings.warn(f"no file locking here: nothing stops a second run on {self.folder}", stacklevel=2)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._current_holder()
                if not self.wait:
                    raise RunsFolderBusy(
                        f"runs folder {self.folder} is in use by another clip2video run: {holder}; "
                        f"wait for it to finish (or pass {self.wait_hint} to wait), or pass another --runs-dir"
                    ) from None
                print(
                    f"clip2video: waiting for {self.folder}: in use by {holder}", file=sys.stderr, flush=True
                )
                fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C / SIGTERM interrupt the wait
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        stale = read_holder(self.folder)
        if stale is not None:
            self.took_over = stale
            warnings.warn(
                f"took over the lock of {self.folder} left by {stale.describe()}: that process is gone "
                "(killed or crashed); its unfinished rows stay resumable",
                stacklevel=2,
            )
        atomic_write_text(self.folder / HOLDER_FILE, json.dumps(Holder.of_this_process().__dict__) + "\n")
        return self

    def _current_holder(self) -> str:
        """The holder's description; its file is written just after it took the lock, so wait a moment."""
        for _ in range(20):
            holder = read_holder(self.folder)
            if holder is not None:
                return holder.describe()
            time.sleep(0.05)
        return "a process whose details are not written yet"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            (self.folder / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunsLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


__all__ = ["RunsLock", "RunsFolderBusy", "Holder", "lock_holder", "read_holder", "LOCK_FILE", "HOLDER_FILE"]
