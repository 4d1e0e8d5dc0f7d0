"""Outputs that are never half written, and names and paths that stay inside their folders.

Writes go beside the target and are renamed over it: a failure (full disk, file-size limit, a
crash) leaves the previous file intact and raises an :class:`~clip2video.errors.OutputError` that
names the file. :func:`atomic_files` does the same for a set of files that belong together (all
of them replaced, or none). :func:`safe_name` and :func:`confined` check names and relative paths
that come from user input (suite, row and eval names; video ids) before they become paths.
Importable by every layer.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from clip2video.errors import ConfigError, OutputError, UnsafePathError, describe_os_error

__all__ = [
    "SAFE_NAME",
    "AtomicFiles",
    "atomic_files",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "confined",
    "fsync_dir",
    "safe_name",
]

# Names used as one folder or file name: no separator, no leading dot (so never '.' or '..').
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MAX_NAME = 200


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    For writers that want a file name (``savefig``, ``np.savez``): write to the yielded path.
    The temporary file keeps ``path``'s suffix, so format detection by suffix still works.
    """
    with atomic_files(_single=True) as batch:
        yield batch.path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class AtomicFiles:
    """A set of files written to temporary paths and renamed over their targets together.

    ``path(target)`` hands out the temporary path to write ``target``'s content to; nothing
    replaces a target until every file of the set is written (see :func:`atomic_files`).
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []  # (temporary, target)

    def path(self, target: str | Path) -> Path:
        """A new temporary path beside ``target`` (same suffix), replaced over it on commit."""
        target = Path(target)
        self.current = target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
            )
            try:  # mkstemp makes 0600 files: give the file the mode a plain open() would
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, _mode_for(target))
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {describe_os_error(exc)}") from exc
        self._pairs.append((Path(tmp_name), target))
        return Path(tmp_name)

    @property
    def targets(self) -> list[Path]:
        return [target for _, target in self._pairs]

    def target_of(self, exc: OSError) -> Path | None:
        """The target an ``OSError`` is about: the one whose temporary file it names, else the
        target handed out last (a failed ``write()`` names no file)."""
        for tmp, target in self._pairs:
            if exc.filename is not None and os.fspath(exc.filename) in (str(tmp), str(target)):
                return target
        return getattr(self, "current", None)

    def commit(self) -> None:
        """Flush every temporary file to disk, then rename each over its target."""
        for tmp, target in self._pairs:
            self.current = target
            _fsync(tmp)
        for tmp, target in self._pairs:
            self.current = target
            os.replace(tmp, target)
        for folder in {target.parent for _, target in self._pairs}:
            fsync_dir(folder)
        self._pairs = []

    def discard(self) -> None:
        """Remove every temporary file not yet renamed."""
        for tmp, _ in self._pairs:
            tmp.unlink(missing_ok=True)
        self._pairs = []


@contextmanager
def atomic_files(*, _single: bool = False) -> Iterator[AtomicFiles]:
    """Write several files all or nothing: ``batch.path(target)`` per file, renamed on exit.

    A failure while writing any of them leaves every previous file unchanged and raises
    :class:`OutputError` naming the file being written.
    """
    batch = AtomicFiles()
    try:
        yield batch
        batch.commit()
    except OSError as exc:
        target = batch.target_of(exc)
        batch.discard()
        why = (
            describe_os_error(OSError(exc.errno, exc.strerror, str(target)))
            if target
            else describe_os_error(exc)
        )
        kept = "the previous file is unchanged" if _single else "none of the files was replaced"
        raise OutputError(f"cannot write {why}; {kept}") from exc
    except BaseException:
        batch.discard()
        raise


def _mode_for(target: Path) -> int:
    """The target's current permission bits, or those the process' umask gives a new file."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: str | Path) -> None:
    """Make renames in ``folder`` durable where the platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- names and paths


def safe_name(value: object, what: str) -> str:
    """``value`` when it can name one folder or file: letters, digits and ``. _ + -``, starting
    with a letter or digit (so no ``/``, no ``..``, not absolute); else a :class:`ConfigError`
    naming ``what`` (e.g. ``"suite name"``, ``"eval --name"``)."""
    text = str(value)
    if not SAFE_NAME.match(text) or len(text) > _MAX_NAME:
        raise ConfigError(
            f"{what} {text!r} cannot name a folder: use letters, digits and . _ + - (starting with a "
            f"letter or digit, at most {_MAX_NAME} characters); '/', '..' and absolute paths are refused"
        )
    return text


def confined(
    root: str | Path,
    relative: str | Path,
    what: str,
    *,
    allow_outside_links: bool = False,
    allow_hint: str = "",
) -> Path:
    """``root / relative``, refused unless it stays inside ``root``.

    ``relative`` may not be absolute, empty or hold ``..`` (nor a backslash or NUL); and unless
    ``allow_outside_links``, the path resolved through symbolic links must stay inside the
    resolved ``root`` (a link to a file elsewhere is refused; ``allow_hint`` says how to allow
    it). Raises :class:`UnsafePathError` naming ``what`` and the path. The path need not exist.
    """
    text = os.fspath(relative)
    parts = PurePosixPath(text).parts
    if (
        not text
        or "\x00" in text
        or "\\" in text
        or PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).drive
        or any(part == ".." for part in parts)
    ):
        raise UnsafePathError(
            f"{what} {text!r} is not a relative path inside {root}: absolute paths, '..' and "
            "backslashes are refused"
        )
    path = Path(root) / text
    if not allow_outside_links:
        real_root = Path(root).resolve()
        real = path.resolve()
        if real != real_root and real_root not in real.parents:
            how = f"; {allow_hint}" if allow_hint else ""
            raise UnsafePathError(
                f"{what}: {path} resolves to {real} through a symbolic link, outside {real_root}; "
                f"links that leave the folder are refused{how}"
            )
    return path
