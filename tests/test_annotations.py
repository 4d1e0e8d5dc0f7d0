"""Annotation parsers and split assembly on small files written here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from clip2video.cli import main
from clip2video.data.annotations import (
    SplitData,
    convert_msvd_pickle,
    load_msvd_captions,
    load_split,
    read_id_csv,
    read_id_list,
    read_jsfusion_csv,
    read_msrvtt_data,
    read_vatex_data,
)
from clip2video.errors import ProtocolError

JSFUSION = (
    "key,vid_key,video_id,sentence\n"
    "ret0,msr9770,video9770,a person is connecting something to system\n"
    'ret1,msr9771,video9771,"a man, a woman and a dog walk"\n'
    "ret2,msr9772,video9772,un café crème à Zürich — naïve\n"
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _msrvtt_json(path: Path, sentences: list[tuple[str, str]]) -> Path:
    data = {
        "videos": [{"video_id": v} for v in dict.fromkeys(v for v, _ in sentences)],
        "sentences": [{"video_id": v, "caption": c, "sen_id": i} for i, (v, c) in enumerate(sentences)],
    }
    return _write(path, json.dumps(data, ensure_ascii=False))


def _brute_force(order: list[str], sentences: list[tuple[str, str]]):
    """Expected (captions, caption_video): video by video in split order, file order inside."""
    captions, owner = [], []
    for index, vid in enumerate(order):
        for v, c in sentences:
            if v == vid:
                captions.append(c)
                owner.append(index)
    return captions, owner


# ---- parsers ---------------------------------------------------------------------------------


def test_jsfusion_csv_keeps_quoted_commas_and_unicode(tmp_path):
    pairs = read_jsfusion_csv(_write(tmp_path / "MSRVTT_JSFUSION_test.csv", JSFUSION))
    assert pairs == [
        ("video9770", "a person is connecting something to system"),
        ("video9771", "a man, a woman and a dog walk"),
        ("video9772", "un café crème à Zürich — naïve"),
    ]


def test_jsfusion_csv_without_sentence_column_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path / "bad.csv", "key,video_id\nret0,video1\n")
    with pytest.raises(ProtocolError, match="bad.csv"):
        read_jsfusion_csv(path)


def test_id_csv_and_id_list(tmp_path):
    assert read_id_csv(_write(tmp_path / "a.csv", "video_id\nvideo0\nvideo12\n")) == ["video0", "video12"]
    # CRLF, blank lines, no final newline
    listed = _write(tmp_path / "b.txt", "x_1_2\r\n\r\n-y_3_4\r\nz\u00e9_5")
    assert read_id_list(listed) == ["x_1_2", "-y_3_4", "z\u00e9_5"]
    with pytest.raises(ProtocolError, match="video_id"):
        read_id_csv(_write(tmp_path / "c.csv", "id\nvideo0\n"))


def test_repeated_ids_are_an_error_naming_them(tmp_path):
    with pytest.raises(ProtocolError, match="dup_id"):
        read_id_list(_write(tmp_path / "d.txt", "a\ndup_id\nb\ndup_id\n"))


def test_msrvtt_data_groups_captions_by_video_in_file_order(tmp_path):
    sents = [("video1", "one a"), ("video0", "zero a"), ("video1", "one b"), ("video0", "zero, b")]
    grouped = read_msrvtt_data(_msrvtt_json(tmp_path / "MSRVTT_data.json", sents))
    assert grouped == {"video1": ["one a", "one b"], "video0": ["zero a", "zero, b"]}
    with pytest.raises(ProtocolError, match="sentences"):
        read_msrvtt_data(_write(tmp_path / "x.json", json.dumps({"videos": []})))


def test_vatex_data_reads_encap_and_names_a_video_without_it(tmp_path):
    data = {"v1": {"enCap": ["a", "b"], "chCap": ["甲"]}, "v2": {"enCap": ["c"]}}
    assert read_vatex_data(_write(tmp_path / "vatex_data.json", json.dumps(data))) == {
        "v1": ["a", "b"],
        "v2": ["c"],
    }
    with pytest.raises(ProtocolError, match="'v3'"):
        read_vatex_data(_write(tmp_path / "bad.json", json.dumps({"v3": {"chCap": ["x"]}})))


def _pickle(path: Path) -> Path:
    raw = {"vidA_1_2": [["a", "man", "is", "cooking"], ["someone", "cooks", "é"]], "vidB_3_4": [["a", "dog"]]}
    path.write_bytes(pickle.dumps(raw))
    return path


def test_msvd_pickle_is_refused_unless_allowed(tmp_path):
    pkl = _pickle(tmp_path / "raw-captions.pkl")
    with pytest.raises(ProtocolError, match="convert-msvd"):
        load_msvd_captions(pkl)
    assert load_msvd_captions(pkl, allow_pickle=True) == {
        "vidA_1_2": ["a man is cooking", "someone cooks é"],
        "vidB_3_4": ["a dog"],
    }


def test_convert_msvd_function_and_cli_write_the_same_json(tmp_path):
    pkl = _pickle(tmp_path / "raw-captions.pkl")
    assert convert_msvd_pickle(pkl, tmp_path / "f.json") == 2
    assert main(["data", "convert-msvd", "--pickle", str(pkl), "--out", str(tmp_path / "c.json")]) == 0
    expected = {"vidA_1_2": ["a man is cooking", "someone cooks é"], "vidB_3_4": ["a dog"]}
    for name in ("f.json", "c.json"):
        assert json.loads((tmp_path / name).read_text(encoding="utf-8")) == expected
    assert load_msvd_captions(tmp_path / "c.json") == expected


# ---- splits ----------------------------------------------------------------------------------


def test_msrvtt_1k_a_test_split_is_the_csv_rows(tmp_path):
    _write(tmp_path / "MSRVTT_JSFUSION_test.csv", JSFUSION)
    split = load_split("msrvtt-1k-a", tmp_path, "test")
    assert split.video_ids == ["video9770", "video9771", "video9772"]
    assert split.captions[1] == "a man, a woman and a dog walk"
    assert split.caption_video.dtype == np.int64 and split.caption_video.tolist() == [0, 1, 2]
    assert split.dropped == {} and (split.protocol, split.split) == ("msrvtt-1k-a", "test")


def test_msrvtt_train_pairs_are_every_sentence_of_the_train_videos(tmp_path):
    _write(tmp_path / "MSRVTT_train.9k.csv", "video_id\nvideo2\nvideo0\n")
    sents = [("video0", "z1"), ("video1", "not train"), ("video2", "t1"), ("video0", "z2"), ("video2", "t2")]
    _msrvtt_json(tmp_path / "MSRVTT_data.json", sents)
    split = load_split("msrvtt-1k-a", tmp_path, "train")
    captions, owner = _brute_force(["video2", "video0"], sents)
    assert split.video_ids == ["video2", "video0"]
    assert split.captions == captions and split.caption_video.tolist() == owner


def test_msrvtt_full_test_uses_all_captions_of_the_range(tmp_path):
    rng = np.random.default_rng(0)
    sents = [(f"video{i}", f"caption {i} {k}") for i in range(7000, 10000) for k in range(rng.integers(1, 3))]
    order = rng.permutation(len(sents))
    sents = [sents[i] for i in order]  # sentences shuffled in the file
    _msrvtt_json(tmp_path / "MSRVTT_data.json", sents)
    split = load_split("msrvtt-full", tmp_path, "test")  # no MSRVTT_test.full.csv: the range
    assert split.video_ids == [f"video{i}" for i in range(7010, 10000)]
    by_video: dict[str, list[str]] = {}
    for v, c in sents:
        by_video.setdefault(v, []).append(c)
    expected = [c for v in split.video_ids for c in by_video[v]]
    assert split.captions == expected
    assert np.all(np.diff(split.caption_video) >= 0)
    assert [split.video_ids[i] for i in split.caption_video] == [f"video{c.split()[1]}" for c in expected]


def test_msvd_json_split_and_pickle_only_by_explicit_path(tmp_path):
    _write(tmp_path / "msvd" / "test_list.txt", "vidB_3_4\nvidA_1_2")  # sub-folder layout, no final newline
    pkl = _pickle(tmp_path / "raw-captions.pkl")
    with pytest.raises(ProtocolError, match="convert-msvd"):
        load_split("msvd", tmp_path, "test")  # never unpickles on its own
    with pytest.raises(ProtocolError, match="pickle"):
        load_split("msvd", tmp_path, "test", captions_path=pkl)
    split = load_split("msvd", tmp_path, "test", captions_path=pkl, allow_pickle=True)
    assert split.video_ids == ["vidB_3_4", "vidA_1_2"]
    assert split.captions == ["a dog", "a man is cooking", "someone cooks é"]
    assert split.caption_video.tolist() == [0, 1, 1]
    convert_msvd_pickle(pkl, tmp_path / "raw-captions.json")
    again = load_split("msvd", tmp_path, "test")
    assert again.captions == split.captions and again.video_ids == split.video_ids


def test_vatex_and_synthetic_splits(tmp_path):
    data = {f"v{i}": {"enCap": [f"v{i} c{k}" for k in range(i % 3 + 1)]} for i in range(6)}
    for name in ("vatex_data.json", "synthetic_data.json"):
        _write(tmp_path / name, json.dumps(data))
    _write(tmp_path / "train_list.txt", "v0\nv1\n")
    _write(tmp_path / "val_list.txt", "v2\n")
    _write(tmp_path / "test_list.txt", "v5\nv3\nv4\n")
    for proto in ("vatex-hgr", "synthetic"):
        test = load_split(proto, tmp_path, "test")
        assert test.video_ids == ["v5", "v3", "v4"]
        assert test.captions == data["v5"]["enCap"] + data["v3"]["enCap"] + data["v4"]["enCap"]
        assert test.caption_video.tolist() == [0, 0, 0, 1, 2, 2]
        assert load_split(proto, tmp_path, "val").captions == ["v2 c0", "v2 c1", "v2 c2"]
        assert load_split(proto, tmp_path, "train").num_captions == 3
    with pytest.raises(ProtocolError, match="no val split"):
        load_split("vatex-1k5", tmp_path, "val")
    with pytest.raises(ProtocolError, match="test1k5_sec_list.txt"):
        load_split("vatex-1k5", tmp_path, "test")


def test_empty_caption_names_the_video_and_index(tmp_path):
    _write(tmp_path / "test_list.txt", "v1\n")
    _write(tmp_path / "vatex_data.json", json.dumps({"v1": {"enCap": ["fine", "   "]}}))
    with pytest.raises(ProtocolError, match=r"'v1' caption 1 is empty"):
        load_split("vatex-hgr", tmp_path, "test")


def test_split_video_without_captions_is_named(tmp_path):
    _write(tmp_path / "test_list.txt", "v1\nghost\n")
    _write(tmp_path / "vatex_data.json", json.dumps({"v1": {"enCap": ["fine"]}}))
    with pytest.raises(ProtocolError, match="ghost"):
        load_split("vatex-hgr", tmp_path, "test")


def test_drop_missing_records_ids_and_counts():
    split = SplitData(
        video_ids=["a", "b", "c", "d"],
        captions=["a0", "b0", "b1", "c0", "d0", "d1", "d2"],
        caption_video=np.array([0, 1, 1, 2, 3, 3, 3], dtype=np.int64),
        protocol="p",
        split="test",
    )
    kept = split.drop_missing(["d", "b"])
    assert kept.video_ids == ["a", "c"]
    assert kept.captions == ["a0", "c0"]
    assert kept.caption_video.tolist() == [0, 1]
    assert kept.dropped == {"video_ids": ["d", "b"], "num_videos": 2, "num_captions": 5}
    again = kept.drop_missing(["c"])
    assert again.dropped == {"video_ids": ["d", "b", "c"], "num_videos": 3, "num_captions": 6}
    assert again.video_ids == ["a"] and again.caption_video.tolist() == [0]
    assert split.dropped == {}  # the original is untouched
    assert split.drop_missing([]) is split
    with pytest.raises(ProtocolError, match="zz"):
        split.drop_missing(["zz"])


def test_drop_missing_matches_brute_force_on_random_splits():
    rng = np.random.default_rng(1)
    ids = [f"v{i}" for i in range(30)]
    owner = np.sort(rng.integers(0, 30, size=120))
    captions = [f"c{n}" for n in range(120)]
    split = SplitData(ids, captions, owner.astype(np.int64))
    gone = [ids[i] for i in rng.choice(30, size=7, replace=False)]
    kept = split.drop_missing(gone)
    expected_pairs = [(captions[n], ids[owner[n]]) for n in range(120) if ids[owner[n]] not in gone]
    assert (
        list(zip(kept.captions, [kept.video_ids[i] for i in kept.caption_video], strict=True))
        == expected_pairs
    )
    assert kept.dropped["num_captions"] == sum(ids[o] in gone for o in owner)
