"""Parse the public annotation files and assemble a protocol's split: ids, captions, pairs.

Bookkeeping (protocols.md): captions are ordered video by video in split-list order and, inside
a video, in file order; ``caption_video[i]`` is the index (into ``video_ids``) of caption i's
video. A train split gives every (caption, video) pair. Caption text is passed through verbatim
(MSVD's token lists are joined by single spaces); a caption that is empty after ``str.strip()``
is an error naming the video id and the caption's index inside that video.

MSVD's ``raw-captions.pkl`` is read only from a path the user names with ``allow_pickle=True``, and
only through :func:`restricted_unpickle` (builtin containers and strings: a pickle that would run
code is refused); ``clip2video data convert-msvd`` turns it into JSON once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip2video.data.protocols import (
    MSRVTT_FULL_TEST_RANGE,
    Protocol,
    SplitReader,
    get_protocol,
    get_reader,
    register_reader,
)
from clip2video.errors import ProtocolError
from clip2video.fileio import atomic_write_text

_SHOW = 20  # ids shown in an error before "... and N more"


def _show(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOW])
    return shown + (f" ... and {len(ids) - _SHOW} more" if len(ids) > _SHOW else "")


# --------------------------------------------------------------------------------------------
# Checksums and file lookup


def content_sha256(path: str | Path) -> str:
    """SHA-256 of the file's text with lines right-stripped, blank lines dropped, "\\n"-joined.

    Equal for two files that differ only in line endings or a final newline.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    lines = [line.rstrip() for line in text.splitlines()]
    body = "\n".join(line for line in lines if line) + "\n"
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def find_annotation(protocol: Protocol, annotations_dir: str | Path, filename: str) -> Path | None:
    """``<dir>/<filename>``, else ``<dir>/<protocol.subfolder>/<filename>``, else ``None``."""
    root = Path(annotations_dir)
    candidates = [root / filename]
    if protocol.subfolder:
        candidates.append(root / protocol.subfolder / filename)
    return next((c for c in candidates if c.is_file()), None)


def annotation_path(protocol: Protocol, annotations_dir: str | Path, filename: str) -> Path:
    """Like :func:`find_annotation` but raises ProtocolError naming where it looked."""
    found = find_annotation(protocol, annotations_dir, filename)
    if found is None:
        root = Path(annotations_dir)
        where = f"{root / filename}" + (
            f" or {root / protocol.subfolder / filename}" if protocol.subfolder else ""
        )
        raise ProtocolError(
            f"protocol {protocol.name!r} needs {filename}: not found at {where}; put the public "
            f"annotation file there or pass the folder that holds it (--annotations)"
        )
    return found


# --------------------------------------------------------------------------------------------
# File parsers


def read_id_list(path: str | Path) -> list[str]:
    """A split list with one video id per line (blank lines skipped; a final newline optional)."""
    path = Path(path)
    ids = [line.strip() for line in read_text(path).splitlines()]
    return _check_unique([i for i in ids if i], path)


def read_id_csv(path: str | Path) -> list[str]:
    """An MSR-VTT id csv (``MSRVTT_train.9k.csv`` ...): header ``video_id``, one id per row."""
    path = Path(path)
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "video_id" not in reader.fieldnames:
            raise ProtocolError(f"{path}: expected a csv with a 'video_id' header, got {reader.fieldnames}")
        ids = [(row["video_id"] or "").strip() for row in reader]
    return _check_unique([i for i in ids if i], path)


def read_jsfusion_csv(path: str | Path) -> list[tuple[str, str]]:
    """``MSRVTT_JSFUSION_test.csv``: (video_id, sentence) per row, in file order.

    Header ``key,vid_key,video_id,sentence``; quoted sentences may hold commas.
    """
    path = Path(path)
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        names = reader.fieldnames or []
        if "video_id" not in names or "sentence" not in names:
            raise ProtocolError(f"{path}: expected columns 'video_id' and 'sentence', got {names}")
        pairs = []
        for line, row in enumerate(reader, start=2):
            if row.get("video_id") is None or row.get("sentence") is None:
                raise ProtocolError(f"{path}, row {line}: missing video_id or sentence ({row})")
            pairs.append((row["video_id"].strip(), row["sentence"]))
    return pairs


def read_split_file(path: str | Path) -> list[str]:
    """The ids of any split file: ``.csv`` (video_id column, pair rows included) or a text list."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return read_id_list(path)
    with io.StringIO(read_text(path), newline="") as handle:
        header = next(csv.reader(handle), [])
    if "sentence" in header:
        return [vid for vid, _ in read_jsfusion_csv(path)]
    return read_id_csv(path)


def read_msrvtt_data(path: str | Path) -> dict[str, list[str]]:
    """``MSRVTT_data.json``: captions grouped by video id, each video's in file order."""
    path = Path(path)
    data = _read_json(path)
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise ProtocolError(f"{path}: expected {{'videos': [...], 'sentences': [...]}} (MSRVTT_data.json)")
    grouped: dict[str, list[str]] = {}
    for n, sent in enumerate(sentences):
        try:
            vid, caption = sent["video_id"], sent["caption"]
        except (KeyError, TypeError):
            raise ProtocolError(f"{path}: sentences[{n}] lacks 'video_id' or 'caption': {sent!r}") from None
        grouped.setdefault(str(vid), []).append(caption)
    return grouped


def read_vatex_data(path: str | Path, key: str = "enCap") -> dict[str, list[str]]:
    """``vatex_data.json`` (and the synthetic protocol's file): ``{id: {"enCap": [...]}}``."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: expected {{video_id: {{'{key}': [captions]}}}}")
    out: dict[str, list[str]] = {}
    for vid, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get(key), list):
            raise ProtocolError(f"{path}: video {vid!r} has no '{key}' list of captions")
        out[str(vid)] = entry[key]
    return out


def load_msvd_captions(path: str | Path, *, allow_pickle: bool = False) -> dict[str, list[str]]:
    """MSVD captions from the JSON ``convert-msvd`` writes (``{id: ["caption", ...]}``).

    ``raw-captions.pkl`` (``{id: [[token, ...], ...]}``) is accepted only with
    ``allow_pickle=True``, through the restricted unpickler (dicts, lists, strings only).
    """
    path = Path(path)
    if path.suffix.lower() in (".pkl", ".pickle"):
        if not allow_pickle:
            raise ProtocolError(
                f"{path} is a pickle. Convert it once with "
                f"`clip2video data convert-msvd --pickle {path} --out {path.with_suffix('.json')}`, "
                f"or pass allow_pickle=True (it is read with a restricted unpickler: dicts, lists, strings)"
            )
        return _msvd_from_pickle(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: expected {{video_id: [caption, ...]}} (from convert-msvd)")
    out: dict[str, list[str]] = {}
    for vid, caps in data.items():
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise ProtocolError(f"{path}: video {vid!r} must map to a list of caption strings")
        out[str(vid)] = caps
    return out


# What a captions pickle may ask the unpickler for: builtin containers and scalars only (protocol
# 2 pickles of bytes go through _codecs.encode). Anything else (os.system, eval, a class) is refused.
_PICKLE_GLOBALS = {
    ("builtins", name)
    for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool")
} | {("_codecs", "encode")}


def restricted_unpickle(path: Path) -> Any:
    """Load a pickle that may hold only builtin containers, strings and numbers: a global it asks
    for (a function that would run, a class) is refused with one :class:`ProtocolError` line."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise ProtocolError(
                f"{path} asks the unpickler for {module}.{name}, which a captions pickle never needs (only "
                "dicts, lists and strings are loaded); refused: it is not MSVD's raw-captions.pkl, or it is "
                "crafted to run code"
            )

    with open(path, "rb") as handle:
        return Restricted(handle).load()


def _msvd_from_pickle(path: Path) -> dict[str, list[str]]:
    import pickle

    if not path.is_file():
        raise ProtocolError(f"MSVD captions pickle {path} does not exist; pass the path of raw-captions.pkl")
    try:
        raw = restricted_unpickle(path)
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
    ) as exc:
        raise ProtocolError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); expected MSVD's raw-captions.pkl"
        ) from exc
    if not isinstance(raw, dict):
        raise ProtocolError(f"{path}: expected a pickled dict {{video_id: [[token, ...], ...]}}")
    out: dict[str, list[str]] = {}
    for vid, caps in raw.items():
        texts = []
        if not isinstance(caps, list | tuple):
            raise ProtocolError(
                f"{path}: video {vid!r} must map to a list of token lists, got {type(caps).__name__}"
            )
        for n, tokens in enumerate(caps):
            if isinstance(tokens, str):
                raise ProtocolError(f"{path}: video {vid!r} caption {n} is a string, expected a token list")
            texts.append(" ".join(str(t) for t in tokens))
        out[str(vid)] = texts
    return out


def convert_msvd_pickle(pickle_path: str | Path, out_path: str | Path | None = None) -> int:
    """Write MSVD's ``raw-captions.pkl`` as JSON ``{id: ["caption text", ...]}``; returns #videos.

    ``out_path`` defaults to ``raw-captions.json`` beside the pickle: the file the msvd protocol reads.
    """
    captions = load_msvd_captions(pickle_path, allow_pickle=True)
    out = Path(out_path) if out_path is not None else msvd_json_path(pickle_path)
    atomic_write_text(out, json.dumps(captions, ensure_ascii=False, indent=0))
    return len(captions)


def read_text(path: str | Path) -> str:
    """A text file's contents (UTF-8, a byte-order mark dropped); ProtocolError naming a non-UTF-8 file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProtocolError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line}); "
            "re-save the file as UTF-8"
        ) from None


def _unique_keys(path: Path) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ProtocolError(
                    f"{path}: key {key!r} appears more than once in one JSON object; a later entry "
                    "would silently replace the earlier one's captions: merge or remove the duplicate"
                )
            out[key] = value
        return out

    return hook


def msvd_json_path(pickle_path: str | Path) -> Path:
    """Where ``convert-msvd`` writes by default: the msvd protocol's captions file beside the pickle."""
    return Path(pickle_path).with_name(get_protocol("msvd").captions_file)


def _read_json(path: Path) -> Any:
    """A JSON file; ProtocolError naming the file when it is not UTF-8, not JSON or repeats a key."""
    try:
        return json.loads(read_text(path), object_pairs_hook=_unique_keys(path))
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{path}: not valid JSON ({exc})") from exc


def _check_unique(ids: list[str], path: Path) -> list[str]:
    seen: set[str] = set()
    repeated = [i for i in ids if i in seen or seen.add(i)]
    if repeated:
        raise ProtocolError(f"{path}: video ids listed more than once: {_show(repeated)}; fix the list")
    return ids


# --------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class SplitData:
    """One split of a protocol: its videos, its captions and the caption -> video index.

    ``dropped`` is empty unless videos were dropped (``drop_missing``); then it holds
    ``{"video_ids": [...], "num_videos": n, "num_captions": m}`` to travel with the results.
    """

    video_ids: list[str]
    captions: list[str]
    caption_video: np.ndarray
    dropped: dict = field(default_factory=dict)
    protocol: str = ""
    split: str = ""

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def captions_of(self, video_index: int) -> list[str]:
        """The captions of video ``video_index``, in order."""
        return [self.captions[i] for i in np.flatnonzero(self.caption_video == video_index)]

    def drop_missing(self, missing_ids: Iterable[str]) -> SplitData:
        """A copy without ``missing_ids`` and their captions, recording what was dropped."""
        missing = list(dict.fromkeys(missing_ids))
        index = {vid: i for i, vid in enumerate(self.video_ids)}
        unknown = [vid for vid in missing if vid not in index]
        if unknown:
            raise ProtocolError(
                f"cannot drop ids that are not in the {self.protocol} {self.split} split: {_show(unknown)}"
            )
        if not missing:
            return self
        drop = np.zeros(len(self.video_ids), dtype=bool)
        drop[[index[vid] for vid in missing]] = True
        keep_caption = ~drop[self.caption_video]
        new_index = np.cumsum(~drop) - 1
        previous = self.dropped or {"video_ids": [], "num_videos": 0, "num_captions": 0}
        dropped = {
            "video_ids": list(previous["video_ids"]) + missing,
            "num_videos": previous["num_videos"] + len(missing),
            "num_captions": previous["num_captions"] + int((~keep_caption).sum()),
        }
        return SplitData(
            video_ids=[vid for vid, d in zip(self.video_ids, drop, strict=True) if not d],
            captions=[c for c, k in zip(self.captions, keep_caption, strict=True) if k],
            caption_video=new_index[self.caption_video[keep_caption]].astype(np.int64),
            dropped=dropped,
            protocol=self.protocol,
            split=self.split,
        )


def load_split(
    protocol: Protocol | str,
    annotations_dir: str | Path,
    split: str,
    *,
    captions_path: str | Path | None = None,
    allow_pickle: bool = False,
) -> SplitData:
    """Assemble ``split`` ("train" | "val" | "test") of ``protocol`` from ``annotations_dir``
    with the reader its ``layout`` names (:func:`clip2video.data.protocols.register_reader`).

    ``captions_path`` overrides the protocol's captions file (for MSVD it may name
    ``raw-captions.pkl``, read only with ``allow_pickle=True``, by the restricted unpickler).
    """
    proto = get_protocol(protocol)
    if proto.split_file(split) is None:
        raise ProtocolError(f"protocol {proto.name!r} has no {split} split")
    reader = get_reader(proto.layout, proto.name)
    return reader(proto, annotations_dir, split, captions_path=captions_path, allow_pickle=allow_pickle)


def split_video_ids(protocol: Protocol | str, annotations_dir: str | Path, split: str) -> list[str]:
    """The video ids of ``split`` in list order (the layout's default ids when its file is absent)."""
    proto = get_protocol(protocol)
    filename = proto.split_file(split)
    if filename is None:
        raise ProtocolError(f"protocol {proto.name!r} has no {split} split")
    path = find_annotation(proto, annotations_dir, filename)
    if path is None:
        defaults = default_split_ids(proto, split)
        if defaults is not None:
            return defaults
        path = annotation_path(proto, annotations_dir, filename)
    return read_split_file(path)


def default_split_ids(protocol: Protocol | str, split: str) -> list[str] | None:
    """The ids used when ``split``'s file is absent (MSR-VTT full test: video7010..video9999), else None."""
    proto = get_protocol(protocol)
    if proto.layout == "msrvtt-full" and split == "test":
        lo, hi = MSRVTT_FULL_TEST_RANGE
        return [f"video{i}" for i in range(lo, hi)]
    return None


# --------------------------------------------------------------------------------------------
# Readers of the built-in layouts. A reader is ``(protocol, annotations_dir, split, *,
# captions_path=None, allow_pickle=False) -> SplitData``; :func:`table_reader` builds one from a
# captions-file parser, for the common case of id lists plus one captions file.

CaptionsParser = Callable[[Path, bool], Mapping[str, list[str]]]


def table_reader(
    parse_captions: CaptionsParser,
    *,
    pair_splits: tuple[str, ...] = (),
    missing_captions_hint: Callable[[Protocol, str | Path], None] | None = None,
) -> SplitReader:
    """A reader for id-list splits plus one captions file ``parse_captions(path, allow_pickle)``
    -> ``{video_id: [caption, ...]}``. Splits in ``pair_splits`` are instead read as (video_id,
    sentence) rows (MSR-VTT's JSFusion csv). ``missing_captions_hint`` may raise a more helpful
    error when the captions file is absent."""

    def read(
        proto: Protocol,
        annotations_dir: str | Path,
        split: str,
        *,
        captions_path: str | Path | None = None,
        allow_pickle: bool = False,
    ) -> SplitData:
        filename = proto.split_file(split)
        if filename is None:
            raise ProtocolError(f"protocol {proto.name!r} has no {split} split")
        if split in pair_splits:
            return _from_pairs(
                proto, split, read_jsfusion_csv(annotation_path(proto, annotations_dir, filename))
            )
        video_ids = split_video_ids(proto, annotations_dir, split)
        path = Path(captions_path) if captions_path else None
        if path is None:
            path = find_annotation(proto, annotations_dir, proto.captions_file)
            if path is None and missing_captions_hint is not None:
                missing_captions_hint(proto, annotations_dir)
            if path is None:
                path = annotation_path(proto, annotations_dir, proto.captions_file)
        elif not path.is_file():
            raise ProtocolError(f"captions file {path} does not exist")
        return _from_table(proto, split, video_ids, parse_captions(path, allow_pickle))

    return read


def _msvd_pickle_hint(proto: Protocol, annotations_dir: str | Path) -> None:
    pkl = find_annotation(proto, annotations_dir, "raw-captions.pkl")
    if pkl is not None:
        raise ProtocolError(
            f"protocol {proto.name!r} reads {proto.captions_file}, found only {pkl}: convert it once with "
            f"`clip2video data convert-msvd --pickle {pkl} --out {msvd_json_path(pkl)}`"
        )


def _msrvtt_captions(path: Path, allow_pickle: bool) -> Mapping[str, list[str]]:
    return read_msrvtt_data(path)


def _msvd_captions(path: Path, allow_pickle: bool) -> Mapping[str, list[str]]:
    return load_msvd_captions(path, allow_pickle=allow_pickle)


def _vatex_captions(path: Path, allow_pickle: bool) -> Mapping[str, list[str]]:
    return read_vatex_data(path)


BUILTIN_READERS: dict[str, SplitReader] = {
    "msrvtt-1k-a": table_reader(_msrvtt_captions, pair_splits=("test",)),
    "msrvtt-full": table_reader(_msrvtt_captions),
    "msvd": table_reader(_msvd_captions, missing_captions_hint=_msvd_pickle_hint),
    "vatex": table_reader(_vatex_captions),
    "synthetic": table_reader(_vatex_captions),
}
for _layout, _reader in BUILTIN_READERS.items():
    register_reader(_layout, _reader)


def _from_table(
    proto: Protocol, split: str, video_ids: list[str], table: Mapping[str, list[str]], source: str = ""
) -> SplitData:
    source = source or proto.captions_file
    if not video_ids:
        raise ProtocolError(
            f"protocol {proto.name!r}: the {split} split ({proto.split_file(split)}) is empty"
        )
    unsafe = [vid for vid in video_ids if not is_plain_id(vid)]
    if unsafe:
        raise ProtocolError(
            f"protocol {proto.name!r}, {split} split ({proto.split_file(split)}): video id(s) that are not "
            f"plain names: {_show([repr(v) for v in unsafe])}; an id names a file inside the videos folder, "
            "so '/', '\\', '..', absolute paths and control characters are refused: fix the split file"
        )
    absent = [vid for vid in video_ids if not table.get(vid)]
    if absent:
        raise ProtocolError(
            f"protocol {proto.name!r}, {split} split: {len(absent)} video(s) have no captions in "
            f"{source}: {_show(absent)}; check that the captions file matches the split lists"
        )
    captions: list[str] = []
    owner: list[int] = []
    for index, vid in enumerate(video_ids):
        for n, caption in enumerate(table[vid]):
            _check_caption(caption, vid, n, source)
            captions.append(caption)
            owner.append(index)
    return SplitData(video_ids, captions, np.asarray(owner, dtype=np.int64), {}, proto.name, split)


def is_plain_id(video_id: str) -> bool:
    """Whether a video id can name a file inside the videos folder: not empty, not ``.`` or ``..``,
    no ``/`` or ``\\``, no control character."""
    return (
        bool(video_id)
        and video_id not in (".", "..")
        and not any(c in video_id for c in "/\\")
        and all(ord(c) >= 32 for c in video_id)
    )


def _from_pairs(proto: Protocol, split: str, pairs: list[tuple[str, str]]) -> SplitData:
    """Rows of (video, caption): grouped video by video in first-appearance order."""
    grouped: dict[str, list[str]] = {}
    for vid, caption in pairs:
        grouped.setdefault(vid, []).append(caption)
    return _from_table(proto, split, list(grouped), grouped, source=proto.split_file(split) or "")


def _check_caption(caption: object, vid: str, n: int, source: str) -> None:
    if not isinstance(caption, str):
        raise ProtocolError(f"{source}: video {vid!r} caption {n} is not a string: {caption!r}")
    if not caption.strip():
        raise ProtocolError(
            f"{source}: video {vid!r} caption {n} is empty; fix or remove it in the annotation file"
        )
