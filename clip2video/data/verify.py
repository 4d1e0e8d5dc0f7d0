"""Check that a protocol's annotations and test videos are what the published numbers used.

``verify`` counts the train / val / test videos and captions the protocol will use, compares each
split file with the public one (id count and SHA-256: a 7k list passed as 9k, or an edited list,
is named), and finds and opens every test video, collecting every missing or unreadable id.
A missing test video is an error unless ``allow_missing``; then the dropped ids and caption
counts are part of the report (and of ``SplitData.dropped``) so they travel with the results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clip2video.data.annotations import (
    SplitData,
    content_sha256,
    default_split_ids,
    find_annotation,
    load_split,
    read_split_file,
)
from clip2video.data.protocols import SPLITS, Protocol, get_protocol, list_protocols
from clip2video.data.videos import lookup_videos, outside_links, probe_video
from clip2video.errors import ProtocolError, VideoReadError
from clip2video.fingerprint import file_sha256


@dataclass(frozen=True)
class SplitFileCheck:
    """One split file against the protocol's record of the public file.

    ``status``: "ok"; "reformatted" (same ids, other line endings / final newline: fine);
    "mismatch" (count or content differs: an error); "missing"; "unrecorded" (no public record).
    """

    file: str
    path: str | None
    status: str
    expected_count: int | None = None
    actual_count: int | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "reformatted", "unrecorded")


@dataclass(frozen=True)
class VideoProblem:
    """A test video that is missing ("missing") or cannot be opened ("unreadable")."""

    video_id: str
    kind: str
    path: str
    reason: str


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` is False when the protocol would not run as published."""

    protocol: str
    annotations_dir: str
    videos_dir: str
    allow_missing: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> {videos, captions}
    split_checks: list[SplitFileCheck] = field(default_factory=list)
    count_problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    missing: list[VideoProblem] = field(default_factory=list)
    unreadable: list[VideoProblem] = field(default_factory=list)
    dropped: dict[str, Any] = field(default_factory=dict)
    videos_opened: bool = True

    @property
    def problem_ids(self) -> list[str]:
        """Every missing or unreadable test video id, in split order."""
        return [p.video_id for p in self.missing + self.unreadable]

    @property
    def ok(self) -> bool:
        files_ok = all(c.ok for c in self.split_checks)
        videos_ok = self.allow_missing or not (self.missing or self.unreadable)
        return files_ok and videos_ok and not self.errors and not self.count_problems

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready) for run records."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


def check_split_files(protocol: Protocol | str, annotations_dir: str | Path) -> list[SplitFileCheck]:
    """Compare each of the protocol's split files with its public count and checksum."""
    proto = get_protocol(protocol)
    return [_check_file(proto, annotations_dir, name) for name in proto.split_files()]


def _check_file(proto: Protocol, annotations_dir: str | Path, name: str) -> SplitFileCheck:
    path = find_annotation(proto, annotations_dir, name)
    want_sha = proto.split_sha256.get(name)
    want_count = proto.split_counts.get(name)
    if path is None:
        defaults = default_split_ids(proto, "test") if name == proto.test_split else None
        note = (
            f"absent: the reader's default test ids {defaults[0]}..{defaults[-1]} are used"
            if defaults
            else "not found"
        )
        status = "ok" if note.startswith("absent") else "missing"
        return SplitFileCheck(name, None, status, want_count, None, want_sha, None, note)
    try:
        count: int | None = len(read_split_file(path))
    except ProtocolError as exc:
        return SplitFileCheck(name, str(path), "mismatch", want_count, None, want_sha, None, str(exc))
    sha = file_sha256(path)
    if want_sha is None:
        return SplitFileCheck(name, str(path), "unrecorded", want_count, count, None, sha)
    if sha == want_sha:
        return SplitFileCheck(name, str(path), "ok", want_count, count, want_sha, sha)
    if content_sha256(path) == proto.split_content_sha256.get(name):
        note = "same ids as the public file; only line endings or the final newline differ"
        return SplitFileCheck(name, str(path), "reformatted", want_count, count, want_sha, sha, note)
    note = "differs from the public file"
    twin = identify_split_file(path)
    if twin:
        note += f"; its content is the public {twin}"
    return SplitFileCheck(name, str(path), "mismatch", want_count, count, want_sha, sha, note)


def identify_split_file(path: str | Path) -> str | None:
    """Name the public split file (and a protocol using it) whose content ``path`` holds, if any."""
    digest = content_sha256(path)
    for name in list_protocols():
        proto = get_protocol(name)
        for file, sha in proto.split_content_sha256.items():
            if sha == digest:
                return f"{file} (as used by protocol {name!r})"
    return None


def decode_fully(path: str | Path, video_id: str) -> None:
    """Decode every frame of a video file (or open every image of a frame folder); VideoReadError
    naming the id, the path and the first frame that fails."""
    from clip2video.data import frames

    full_check = getattr(frames, "check_full_decode", None)  # H4's decoder-level check, when present
    if full_check is not None:
        full_check(path, video_id)
        return
    path = Path(path)
    if path.is_dir():
        from PIL import Image

        from clip2video.data.videos import frame_files

        files = frame_files(path)
        if not files:
            raise VideoReadError(video_id, path, "frame folder holds no .jpg/.png frames")
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
            except Exception as exc:
                raise VideoReadError(
                    video_id, file, f"frame cannot be decoded ({type(exc).__name__}: {exc})"
                ) from exc
        return
    from clip2video.data.videos import open_video

    reader = open_video(path, video_id)
    total = len(reader)
    for start in range(0, total, _DECODE_CHUNK):
        stop = min(start + _DECODE_CHUNK, total)
        try:
            reader.get_batch(list(range(start, stop)))
        except Exception as exc:  # decord raises RuntimeError or DECORDError
            raise VideoReadError(
                video_id,
                path,
                f"frames {start}..{stop - 1} of {total} cannot be decoded ({type(exc).__name__})",
            ) from exc


_DECODE_CHUNK = 64


def check_videos(
    split: SplitData,
    videos_dir: str | Path,
    *,
    open_videos: bool = True,
    progress: bool | None = None,
    full_decode: bool = False,
) -> tuple[list[VideoProblem], list[VideoProblem]]:
    """(missing, unreadable) among the split's videos; every id is tried, none stops the loop.

    ``open_videos`` opens each video (its first frame); ``full_decode`` decodes every frame.
    ``progress``: a bar (True), none (False), or one only when stderr is a terminal (None)."""
    from tqdm.auto import tqdm

    missing: list[VideoProblem] = []
    unreadable: list[VideoProblem] = []
    label = f"{split.protocol} {split.split} videos".strip()
    found = lookup_videos(videos_dir, split.video_ids)
    for vid in tqdm(
        split.video_ids, desc=label, unit="video", disable=None if progress is None else not progress
    ):
        path = found[vid]
        if path is None:
            reason = f"not found (no {vid}.<mp4|avi|webm|mkv|...> file and no {vid}/ frame folder)"
            missing.append(VideoProblem(vid, "missing", str(videos_dir), reason))
            continue
        if not open_videos:
            continue
        try:
            decode_fully(path, vid) if full_decode else probe_video(path, vid)
        except VideoReadError as exc:
            unreadable.append(VideoProblem(vid, "unreadable", str(path), exc.reason))
        except Exception as exc:  # a decoder failure that videos.py does not wrap
            unreadable.append(VideoProblem(vid, "unreadable", str(path), f"{type(exc).__name__}: {exc}"))
    return missing, unreadable


def verify(
    protocol: Protocol | str,
    annotations_dir: str | Path,
    videos_dir: str | Path,
    *,
    allow_missing: bool = False,
    open_videos: bool = True,
    progress: bool | None = None,
    captions_path: str | Path | None = None,
    allow_pickle: bool = False,
    allow_outside_links: bool = False,
) -> VerifyReport:
    """Check ``protocol``'s annotations in ``annotations_dir`` and its test videos in ``videos_dir``.

    A video id or a video file's symbolic link that leaves ``videos_dir`` is an error unless
    ``allow_outside_links`` allows the links."""
    with outside_links(allow_outside_links):
        return _verify(
            protocol,
            annotations_dir,
            videos_dir,
            allow_missing=allow_missing,
            open_videos=open_videos,
            progress=progress,
            captions_path=captions_path,
            allow_pickle=allow_pickle,
        )


def _verify(
    protocol: Protocol | str,
    annotations_dir: str | Path,
    videos_dir: str | Path,
    *,
    allow_missing: bool,
    open_videos: bool,
    progress: bool | None,
    captions_path: str | Path | None,
    allow_pickle: bool,
) -> VerifyReport:
    proto = get_protocol(protocol)
    report = VerifyReport(
        protocol=proto.name,
        annotations_dir=str(annotations_dir),
        videos_dir=str(videos_dir),
        allow_missing=allow_missing,
        videos_opened=open_videos,
    )
    report.split_checks = check_split_files(proto, annotations_dir)
    splits: dict[str, SplitData] = {}
    for name in SPLITS:
        if proto.split_file(name) is None:
            continue
        try:
            splits[name] = load_split(
                proto, annotations_dir, name, captions_path=captions_path, allow_pickle=allow_pickle
            )
        except ProtocolError as exc:
            report.errors.append(f"{name} split: {exc}")
            continue
        report.counts[name] = {"videos": splits[name].num_videos, "captions": splits[name].num_captions}
    if "test" in splits:
        test = splits["test"]
        report.count_problems = _count_problems(proto, splits)
        report.missing, report.unreadable = check_videos(
            test, videos_dir, open_videos=open_videos, progress=progress
        )
        if allow_missing and report.problem_ids:
            kept = test.drop_missing(report.problem_ids)
            report.dropped = kept.dropped
            report.counts["test"] = {"videos": kept.num_videos, "captions": kept.num_captions}
    return report


def _count_problems(proto: Protocol, splits: dict[str, SplitData]) -> list[str]:
    problems = []
    for name, split in splits.items():
        want = proto.expected_videos(name)
        if want is not None and split.num_videos != want:
            problems.append(f"{name}: {split.num_videos:,} videos, the protocol expects {want:,}")
    test = splits["test"]
    if proto.expected_test_captions is not None and test.num_captions != proto.expected_test_captions:
        problems.append(
            f"test: {test.num_captions:,} captions, the protocol expects {proto.expected_test_captions:,}"
        )
    # A single-caption protocol (multi_caption=False) needs exactly one caption per test video.
    per_test_video = proto.captions_per_test_video or (None if proto.multi_caption else 1)
    if per_test_video is not None:
        per_video = [len(test.captions_of(i)) for i in range(test.num_videos)]
        off = [
            f"{vid} ({n})" for vid, n in zip(test.video_ids, per_video, strict=True) if n != per_test_video
        ]
        if off:
            problems.append(
                f"test: {len(off)} video(s) without exactly {per_test_video} caption(s): "
                + ", ".join(off[:20])
                + (" ..." if len(off) > 20 else "")
            )
    return problems


def format_report(report: VerifyReport) -> str:
    """A human-readable summary: counts, split-file checks, every missing / unreadable id."""
    lines = [f"protocol {report.protocol}: annotations {report.annotations_dir}, videos {report.videos_dir}"]
    for name in SPLITS:
        if name in report.counts:
            c = report.counts[name]
            lines.append(f"  {name:<5} {c['videos']:>7,} videos {c['captions']:>9,} captions")
    lines.append("split files:")
    for check in report.split_checks:
        line = f"  [{check.status}] {check.file}"
        if check.actual_count is not None:
            line += f": {check.actual_count:,} ids"
        if check.status == "mismatch" and check.expected_count is not None:
            line += f"; expected {check.expected_count:,} ids"
        if check.note:
            line += f" ({check.note})"
        lines.append(line)
        if check.status == "mismatch":
            lines.append(f"      sha256 {check.actual_sha256}, public file {check.expected_sha256}")
    for problem in report.count_problems:
        lines.append(f"count mismatch: {problem}")
    for error in report.errors:
        lines.append(f"error: {error}")
    how = "found and opened" if report.videos_opened else "found (not opened: --no-open)"
    if "test" in report.counts:
        total = report.counts["test"]["videos"] + len(report.dropped.get("video_ids", []))
        bad = len(report.problem_ids)
        lines.append(f"test videos: {total - bad:,} of {total:,} {how}")
    if report.missing:
        lines.append(
            f"{len(report.missing):,} missing test video(s) in {report.videos_dir} "
            "(no <id>.<mp4|avi|webm|mkv|...> file and no <id>/ frame folder):"
        )
        lines += [f"  {p.video_id}" for p in report.missing]
    if report.unreadable:
        lines.append(f"{len(report.unreadable):,} unreadable test video(s):")
        lines += [f"  {p.video_id}: {p.path}: {p.reason}" for p in report.unreadable]
    if report.dropped:
        lines.append(
            f"DROPPED (--allow-missing): {report.dropped['num_videos']:,} test videos and "
            f"{report.dropped['num_captions']:,} captions; results on this split are not the "
            f"published protocol: {', '.join(report.dropped['video_ids'])}"
        )
    lines.append("OK" if report.ok else "FAILED: the protocol would not run as published (see above)")
    return "\n".join(lines)


def require_test_videos(
    split: SplitData,
    videos_dir: str | Path,
    *,
    allow_missing: bool = False,
    open_videos: bool = True,
    progress: bool | None = None,
    full_decode: bool = False,
) -> SplitData:
    """``split`` when all its videos exist and open; else an error naming every missing / unreadable
    id, or (``allow_missing``, like ``data verify --allow-missing``) the split without them, with
    ``dropped`` recording ids and counts."""
    missing, unreadable = check_videos(
        split, videos_dir, open_videos=open_videos, progress=progress, full_decode=full_decode
    )
    bad = missing + unreadable
    if not bad:
        return split
    if allow_missing:
        return split.drop_missing(p.video_id for p in bad)
    listing = "; ".join(
        f"{p.video_id} ({p.kind}: {p.path}" + (f": {p.reason}" if p.kind != "missing" else "") + ")"
        for p in bad
    )
    raise ProtocolError(
        f"{len(bad)} {split.protocol} {split.split} video(s) missing or unreadable in {videos_dir}: "
        f"{listing}. Dropping them changes the protocol: to drop them and record it, pass "
        "`--set data.allow_missing=true` (ablation, eval) or `--allow-missing` (data verify)"
    )


def require_split_videos_exist(split: SplitData, videos_dir: str | Path) -> None:
    """Every video of a (training) split exists; else one error naming the split and every missing id."""
    found = lookup_videos(videos_dir, split.video_ids)
    missing = [vid for vid in split.video_ids if found[vid] is None]
    if missing:
        shown = ", ".join(missing[:20]) + (f" ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise ProtocolError(
            f"{len(missing)} of {split.num_videos} {split.protocol} {split.split} video(s) are missing in "
            f"{videos_dir}: {shown}; add them or point --data-root / data.videos at the right folder "
            f"(the {split.split} split cannot drop videos)"
        )
