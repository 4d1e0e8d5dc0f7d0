"""A toy protocol in one file: one reader and one entry.

Its annotation folder holds ``toy_train.txt`` / ``toy_test.txt`` (one video id per line) and
``toy_captions.tsv`` (``video_id<TAB>caption`` per line, a video's captions in file order). The
videos are any files ``clip2video.data.videos.find_video`` finds under ``videos/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip2video.data import protocols
from clip2video.data.annotations import SplitData
from clip2video.data.protocols import Protocol
from clip2video.errors import ProtocolError

LAYOUT = "toy-tsv"


def read_split(protocol: Protocol, annotations_dir: str | Path, split: str, **_: object) -> SplitData:
    """The reader: the split's ids from its list, their captions from the TSV, video by video."""
    folder = Path(annotations_dir)
    filename = protocol.split_file(split)
    if filename is None:
        raise ProtocolError(f"protocol {protocol.name!r} has no {split} split")
    ids = [line.strip() for line in (folder / filename).read_text().splitlines() if line.strip()]
    table: dict[str, list[str]] = {}
    for number, line in enumerate((folder / protocol.captions_file).read_text().splitlines(), 1):
        if line.strip():
            vid, sep, caption = line.partition("\t")
            if not sep or not caption.strip():
                raise ProtocolError(f"{folder / protocol.captions_file}:{number}: expected 'id<TAB>caption'")
            table.setdefault(vid, []).append(caption.strip())
    missing = [vid for vid in ids if vid not in table]
    if missing:
        raise ProtocolError(f"{protocol.captions_file}: no captions for {', '.join(missing)}")
    captions = [c for vid in ids for c in table[vid]]
    owner = [i for i, vid in enumerate(ids) for _ in table[vid]]
    return SplitData(ids, captions, np.asarray(owner, dtype=np.int64), {}, protocol.name, split)


def make_protocol() -> Protocol:
    """The entry: files and the frame / text settings of the toy protocol."""
    return Protocol(
        name="toy-tsv",
        layout=LAYOUT,
        stride=1,
        center_k=2,
        image_size=32,
        max_frames=4,
        train_split="toy_train.txt",
        test_split="toy_test.txt",
        captions_file="toy_captions.tsv",
        description="toy protocol: id lists and a TSV of captions",
    )


# The registrations: the reader of its layout, and the protocol entry.
protocols.register_reader(LAYOUT, read_split)
PROTOCOL = protocols.register_protocol(make_protocol(), overwrite=True)
assert PROTOCOL.name in protocols.list_protocols(), "the registration above must make the protocol known"
