"""Where a table's numbers came from: the platforms in its records' fingerprints.

Every record carries ``fingerprint["platform"]`` (``clip2video.fingerprint.platform_fingerprint``:
CPU model, torch's CPU kernel set ``cpu_capability``, threads, torch version, device). The same code
gives different floats on another kernel set, so each table's footnote names the platform(s) of its
rows, and says so when rows come from different platforms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clip2video.engine.records import RunRecord
from clip2video.report.groups import ModelGroup

# The fields that decide a table's floats, in the order a footnote names them.
PLATFORM_FIELDS = ("cpu_model", "cpu_capability", "threads", "torch", "device", "cuda_device")


def record_platform(rec: RunRecord) -> dict[str, Any] | None:
    """The record's platform fingerprint (only the fields that decide its floats), or None."""
    fp = rec.fingerprint.get("platform") if isinstance(rec.fingerprint, Mapping) else None
    if not isinstance(fp, Mapping):
        return None
    return {k: fp[k] for k in PLATFORM_FIELDS if k in fp}


def describe_platform(platform: Mapping[str, Any] | None) -> str:
    """``AMD EPYC, CPU kernels AVX512, 1 thread, torch 2.4.1`` (plus the GPU where one was used)."""
    if not platform:
        return "platform not recorded"
    threads = platform.get("threads")
    parts = [
        str(platform.get("cpu_model") or "unknown CPU"),
        f"CPU kernels {platform.get('cpu_capability') or 'unknown'}",
        f"{threads} thread{'s' if threads != 1 else ''}" if threads is not None else "threads unknown",
        f"torch {platform.get('torch') or 'unknown'}",
    ]
    device = str(platform.get("device") or "cpu")
    if device != "cpu":
        parts.append(
            f"device {device}" + (f" ({platform['cuda_device']})" if platform.get("cuda_device") else "")
        )
    return ", ".join(parts)


def platform_rows(groups: Sequence[ModelGroup]) -> list[tuple[dict[str, Any] | None, list[str]]]:
    """The distinct platforms of ``groups``' records and the rows that ran on each (a row whose seeds
    ran on different platforms is named per seed), in order of first appearance."""
    found: list[tuple[dict[str, Any] | None, list[str]]] = []
    for group in groups:
        platforms = [record_platform(r) for r in group.records]
        mixed = any(p != platforms[0] for p in platforms)
        for rec, platform in zip(group.records, platforms, strict=True):
            label = f"{group.label} (seed {rec.seed})" if mixed else group.label
            entry = next((e for e in found if e[0] == platform), None)
            if entry is None:
                entry = (platform, [])
                found.append(entry)
            if label not in entry[1]:
                entry[1].append(label)
    return found


def platform_note(groups: Sequence[ModelGroup]) -> str:
    """The footnote naming the table's platform(s)."""
    found = platform_rows(groups)
    if len(found) == 1:
        return f"Platform: {describe_platform(found[0][0])} (every row)."
    return (
        "Platforms differ between rows: "
        + "; ".join(f"{describe_platform(platform)}: {', '.join(rows)}" for platform, rows in found)
        + "."
    )


__all__ = [
    "PLATFORM_FIELDS",
    "describe_platform",
    "platform_note",
    "platform_rows",
    "record_platform",
]
