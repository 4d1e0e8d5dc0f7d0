"""Fingerprints: what produced a result (platform, code, settings, data), as plain JSON-able dicts.

A record, cache entry, checkpoint or lock is valid only for the fingerprint that produced it.
``platform_fingerprint`` says where it ran (CPU model, torch's CPU kernel set, library versions,
threads, device); ``code_version`` which code; ``digest`` hashes settings; ``file_digest`` and
``file_identity`` identify data files. ``differences`` names the keys where two fingerprints differ,
for messages such as "settings.train.epochs: 2 -> 3".
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent
_CODE_SUFFIXES = (".py", ".toml", ".json", ".csv")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def platform_fingerprint(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Where a result was computed: CPU model, torch's CPU kernel set, versions, threads, device.

    ``cpu_capability`` is what torch actually uses (``ATEN_CPU_CAPABILITY`` forces it: ``avx2``,
    ``avx512`` or ``default``, which means the scalar kernels).
    """
    import numpy as np
    import torch

    out: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "open_clip": _version("open_clip_torch"),
        "python": platform.python_version(),
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        out["cuda"] = torch.version.cuda
    return out


@functools.cache
def code_version() -> dict[str, str]:
    """The package version and a hash of its source files (every ``.py``/``.toml``/``.json``/``.csv``)."""
    from clip2video import __version__

    h = hashlib.sha256()
    for path in sorted(p for p in _PACKAGE_DIR.rglob("*") if p.suffix in _CODE_SUFFIXES and p.is_file()):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return {"version": __version__, "source_sha256": h.hexdigest()[:16]}


def digest(value: Any) -> str:
    """A short hash of a JSON-able value (keys sorted), e.g. a resolved settings dict."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as ``sha256sum`` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a file's content."""
    return file_sha256(path)[:16]


def file_identity(path: str | Path) -> str:
    """A cheap content identity of a (possibly large) file: size and modification time in ns.

    Rewriting a file changes its mtime, so an overwritten video or frame image gets a new identity.
    """
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}"


def video_identity(path: str | Path) -> str:
    """Identity of a video file, or of a frame folder (every image inside, by name and identity)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for image in sorted(p for p in path.iterdir() if p.is_file()):
            h.update(f"{image.name}:{file_identity(image)};".encode())
        return "dir-" + h.hexdigest()[:16]
    return file_identity(path)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable keys where two (nested) fingerprints differ: ``"a.b: 1 -> 2"``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{where}: absent -> {_short(new[key])}")
            elif key not in new:
                out.append(f"{where}: {_short(old[key])} -> absent")
            else:
                out.extend(differences(old[key], new[key], where))
        return out
    if old != new:
        return [f"{prefix or '(value)'}: {_short(old)} -> {_short(new)}"]
    return []


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
