"""Protocol registry: the spec table's settings, and the records of the real public split files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clip2video.data.annotations import find_annotation, read_id_list, split_video_ids
from clip2video.data.protocols import Protocol, get_protocol, list_protocols, register_protocol
from clip2video.errors import DuplicateNameError, ProtocolError

# protocols.md's table: (train file, test file, frame stride, TAB centers K)
SPEC_TABLE = {
    "msrvtt-1k-a": ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", 2, 5),
    "msrvtt-1k-a-7k": ("MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv", 2, 5),
    "msrvtt-full": ("MSRVTT_train.full.csv", "MSRVTT_test.full.csv", 2, 5),
    "msvd": ("train_list.txt", "test_list.txt", 1, 5),
    "vatex-1k5": ("train_list.txt", "test1k5_sec_list.txt", 1, 7),
    "vatex-hgr": ("train_list.txt", "test_list.txt", 1, 7),
}
# The public files' id counts, from the shared splits README (rows for the JSFusion pairs csv).
PUBLIC_COUNTS = {
    ("msrvtt", "MSRVTT_JSFUSION_test.csv"): 1000,
    ("msrvtt", "MSRVTT_train.9k.csv"): 9000,
    ("msrvtt", "MSRVTT_train.7k.csv"): 7010,
    ("msrvtt", "MSRVTT_train.full.csv"): 6513,
    ("msrvtt", "MSRVTT_test.full.csv"): 2990,
    ("msvd", "train_list.txt"): 1200,
    ("msvd", "val_list.txt"): 100,
    ("msvd", "test_list.txt"): 670,
    ("vatex", "train_list.txt"): 25991,
    ("vatex", "val_list.txt"): 1500,
    ("vatex", "test_list.txt"): 1500,
    ("vatex", "test1k5_sec_list.txt"): 1500,
}


def test_registry_lists_every_protocol_of_the_spec_and_synthetic():
    assert set(SPEC_TABLE) | {"synthetic"} <= set(list_protocols())


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_settings_follow_the_spec_table(name):
    train, test, stride, k = SPEC_TABLE[name]
    p = get_protocol(name)
    assert (p.train_split, p.test_split, p.stride, p.center_k) == (train, test, stride, k)
    assert (p.extraction_fps, p.max_frames, p.max_words, p.image_size) == (5.0, 12, 32, 224)
    assert p.multi_caption == (name not in ("msrvtt-1k-a", "msrvtt-1k-a-7k"))


def test_expected_counts_of_the_spec_table():
    assert get_protocol("msrvtt-1k-a").expected_test_videos == 1000
    assert get_protocol("msrvtt-1k-a").expected_test_captions == 1000
    assert get_protocol("msrvtt-1k-a").expected_train_videos == 9000
    assert get_protocol("msrvtt-1k-a-7k").expected_train_videos == 7010
    assert get_protocol("msrvtt-full").expected_test_videos == 2990
    assert get_protocol("msrvtt-full").expected_train_videos == 6513
    assert get_protocol("msvd").expected_test_videos == 670
    assert get_protocol("msvd").expected_train_videos == 1200
    for name in ("vatex-1k5", "vatex-hgr"):
        p = get_protocol(name)
        assert (p.expected_test_videos, p.expected_test_captions, p.captions_per_test_video) == (
            1500,
            15000,
            10,
        )


def test_vatex_1k5_has_no_val_split_and_hgr_has_one():
    assert get_protocol("vatex-1k5").val_split is None
    assert get_protocol("vatex-hgr").val_split == "val_list.txt"
    assert get_protocol("msvd").val_split == "val_list.txt"
    assert get_protocol("msrvtt-1k-a").val_split is None


def test_synthetic_protocol_is_vatex_like_and_tiny():
    p = get_protocol("synthetic")
    assert p.layout == "synthetic" and p.multi_caption
    assert (p.train_split, p.val_split, p.test_split) == ("train_list.txt", "val_list.txt", "test_list.txt")
    assert p.captions_file == "synthetic_data.json"
    assert (p.stride, p.extraction_fps, p.max_frames, p.center_k, p.max_words, p.image_size) == (
        1,
        5.0,
        12,
        5,
        32,
        32,
    )
    assert not p.split_sha256 and p.expected_test_videos is None


def test_unknown_protocol_names_the_known_ones():
    with pytest.raises(ProtocolError) as err:
        get_protocol("msrvtt-1k-b")
    assert (
        "msrvtt-1k-b" in str(err.value) and "msrvtt-1k-a" in str(err.value) and "vatex-hgr" in str(err.value)
    )


def test_register_protocol_refuses_a_silent_replacement():
    base = get_protocol("synthetic")
    custom = Protocol(
        name="test-custom",
        layout="vatex",
        stride=3,
        center_k=4,
        train_split="a.txt",
        test_split="b.txt",
        captions_file="c.json",
    )
    register_protocol(custom, overwrite=True)
    assert get_protocol("test-custom").stride == 3
    assert "test-custom" in list_protocols()
    changed = Protocol(**{**custom.__dict__, "stride": 1})
    with pytest.raises(DuplicateNameError, match="a protocol named 'test-custom' is already registered"):
        register_protocol(changed)
    register_protocol(changed, overwrite=True)
    assert get_protocol("test-custom").stride == 1
    with pytest.raises(DuplicateNameError, match="already registered"):
        register_protocol(Protocol(**{**base.__dict__, "stride": 2}))


def test_protocol_layout_names_a_registered_reader(tmp_path):
    """``layout`` names the annotation reader; an unknown one is refused naming the available ones,
    and a protocol with its own reader is one reader + one entry (issue 9 §3)."""
    from clip2video.data.annotations import load_split, table_reader
    from clip2video.data.protocols import list_readers, register_reader
    from clip2video.errors import UnknownNameError

    odd = Protocol(
        name="test-youcook",
        layout="youcook",
        stride=1,
        center_k=1,
        train_split="a",
        test_split="b",
        captions_file="c",
    )
    register_protocol(odd, overwrite=True)
    with pytest.raises(
        UnknownNameError, match=r"Unknown reader .*'youcook'. Available: msrvtt-1k-a, msrvtt-full"
    ):
        load_split("test-youcook", tmp_path, "test")
    assert "vatex" in list_readers()
    (tmp_path / "b").write_text("v1\nv2\n")
    (tmp_path / "c").write_text("v1\tone\nv2\ttwo\nv2\tthree\n")

    def tsv(path, allow_pickle):
        table = {}
        for line in path.read_text().splitlines():
            vid, caption = line.split("\t")
            table.setdefault(vid, []).append(caption)
        return table

    register_reader("youcook", table_reader(tsv), overwrite=True)
    split = load_split("test-youcook", tmp_path, "test")
    assert split.captions == ["one", "two", "three"] and split.caption_video.tolist() == [0, 1, 1]
    with pytest.raises(ProtocolError, match="layout"):
        Protocol(
            name="x", layout="", stride=1, center_k=1, train_split="a", test_split="b", captions_file="c"
        )
    with pytest.raises(ProtocolError, match="split"):
        get_protocol("msvd").split_file("dev")
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        get_protocol("msvd").stride = 3  # type: ignore[misc]


def _independent_count(path: Path) -> int:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return len(lines) - (1 if path.suffix == ".csv" else 0)


@pytest.mark.splits
def test_recorded_checksums_and_counts_match_the_real_split_files(splits_dir):
    seen = set()
    for name in sorted(SPEC_TABLE):
        p = get_protocol(name)
        assert p.split_files(), name
        for file in p.split_files():
            path = find_annotation(p, splits_dir, file)
            assert path is not None, (name, file)
            group = path.parent.name if path.parent != splits_dir else "msrvtt"
            seen.add((group, file))
            assert p.split_sha256[file] == hashlib.sha256(path.read_bytes()).hexdigest(), (name, file)
            assert p.split_counts[file] == _independent_count(path) == PUBLIC_COUNTS[(group, file)]
    assert seen == set(PUBLIC_COUNTS)


@pytest.mark.splits
def test_msvd_train_list_without_final_newline_still_has_1200_ids(splits_dir):
    path = splits_dir / "msvd" / "train_list.txt"
    assert not path.read_bytes().endswith(b"\n")  # the real public file
    ids = read_id_list(path)
    assert len(ids) == 1200 and len(set(ids)) == 1200
    assert ids[-1] == path.read_text().split()[-1]


@pytest.mark.splits
def test_msrvtt_full_test_ids_are_the_range_with_or_without_the_csv(splits_dir, tmp_path):
    expected = [f"video{i}" for i in range(7010, 10000)]
    assert split_video_ids("msrvtt-full", splits_dir, "test") == expected
    assert split_video_ids("msrvtt-full", tmp_path, "test") == expected


@pytest.mark.parametrize("name", sorted(SPEC_TABLE) + ["synthetic"])
def test_settings_are_the_suite_keys_a_protocol_fills(name):
    """``Protocol.settings()``: the protocol's defaults for a suite, keyed as in a suite file."""
    p = get_protocol(name)
    assert p.settings() == {
        "frames": {
            "extraction_fps": p.extraction_fps,
            "stride": p.stride,
            "max_frames": p.max_frames,
            "image_size": p.image_size,
        },
        "text": {"max_words": p.max_words},
        "model": {"center_k": p.center_k},
    }
    assert isinstance(p.settings()["frames"]["extraction_fps"], float)


def test_multi_caption_is_checked_against_the_captions_per_test_video():
    """A single-caption protocol cannot expect several captions per test video; verify requires one."""
    import numpy as np

    from clip2video.data.annotations import SplitData
    from clip2video.data.verify import _count_problems

    common = dict(layout="vatex", stride=1, center_k=1, train_split="a", test_split="b", captions_file="c")
    with pytest.raises(ProtocolError, match="multi_caption"):
        Protocol(name="x", multi_caption=False, captions_per_test_video=2, **common)
    single = Protocol(name="x", multi_caption=False, **common)  # no captions_per_test_video of its own
    multi = Protocol(name="y", **common)
    two = SplitData(["v0", "v1"], ["a", "b", "c"], np.array([0, 1, 1]))
    assert _count_problems(multi, {"test": two}) == []
    (problem,) = _count_problems(single, {"test": two})
    assert "without exactly 1 caption" in problem and "v1 (2)" in problem
