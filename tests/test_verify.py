"""``verify`` and ``clip2video data verify`` against the real split lists with stand-in videos.

One tiny real video is written once and hard-linked under every id of a list (a symbolic link
would leave the videos folder, which ``verify`` refuses unless allowed), and minimal caption
files are written for the ids; the counts checked are protocols.md's table.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from clip2video.cli import main
from clip2video.data.annotations import load_split
from clip2video.data.verify import format_report, require_test_videos, verify
from clip2video.data.video_writer import write_video
from clip2video.errors import ProtocolError

pytestmark = pytest.mark.splits


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    frames = np.random.default_rng(0).integers(0, 255, size=(3, 16, 16, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("video") / "tiny.mp4", frames, fps=5)


def _ids(path: Path) -> list[str]:
    if path.suffix == ".csv":
        with open(path, newline="") as handle:
            return [row["video_id"] for row in csv.DictReader(handle)]
    return path.read_text().split()


def _stand_ins(folder: Path, ids: list[str], video: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for vid in ids:
        os.link(video, folder / f"{vid}.mp4")
    return folder


def _link(ann: Path, source: Path, name: str | None = None) -> None:
    ann.mkdir(parents=True, exist_ok=True)
    os.symlink(source, ann / (name or source.name))


def _captions_per_video(vid: str) -> int:
    """A varying, independent caption count for MSVD-like stand-ins (1..3)."""
    return sum(map(ord, vid)) % 3 + 1


@pytest.fixture(scope="module")
def msvd(splits_dir, tiny_video, tmp_path_factory):
    root = tmp_path_factory.mktemp("msvd")
    ann = root / "ann"
    captions = {}
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        _link(ann, splits_dir / "msvd" / name)
        for vid in _ids(splits_dir / "msvd" / name):
            captions[vid] = [f"{vid} caption {k}" for k in range(_captions_per_video(vid))]
    (ann / "raw-captions.json").write_text(json.dumps(captions))
    test_ids = _ids(splits_dir / "msvd" / "test_list.txt")
    return ann, test_ids, captions


def _videos(tmp_path: Path, ids: list[str], tiny_video: Path) -> Path:
    return _stand_ins(tmp_path / "videos", ids, tiny_video)


def test_msvd_counts_and_clean_run(msvd, tiny_video, tmp_path, capsys):
    ann, test_ids, captions = msvd
    videos = _videos(tmp_path, test_ids, tiny_video)
    report = verify("msvd", ann, videos, progress=False)
    assert report.ok, format_report(report)
    assert report.counts["test"] == {"videos": 670, "captions": sum(len(captions[v]) for v in test_ids)}
    assert report.counts["train"]["videos"] == 1200 and report.counts["val"]["videos"] == 100
    assert [c.status for c in report.split_checks] == ["ok", "ok", "ok"]
    assert not report.missing and not report.unreadable and not report.dropped

    rc = main(["data", "verify", "--protocol", "msvd", "--annotations", str(ann), "--videos", str(videos)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "670 videos" in out and "1,200 videos" in out and "OK" in out


def test_missing_videos_fail_naming_every_id(msvd, tiny_video, tmp_path, capsys):
    ann, test_ids, _ = msvd
    gone = [test_ids[3], test_ids[100], test_ids[-1]]
    videos = _videos(tmp_path, [v for v in test_ids if v not in gone], tiny_video)
    report = verify("msvd", ann, videos, open_videos=False, progress=False)
    assert not report.ok
    assert [p.video_id for p in report.missing] == gone
    rc = main(
        [
            "data",
            "verify",
            "--protocol",
            "msvd",
            "--annotations",
            str(ann),
            "--videos",
            str(videos),
            "--no-open",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1
    for vid in gone:
        assert vid in captured.out and vid in captured.err


def test_allow_missing_drops_and_records_counts(msvd, tiny_video, tmp_path, capsys):
    ann, test_ids, captions = msvd
    gone = test_ids[10:14]
    videos = _videos(tmp_path, [v for v in test_ids if v not in gone], tiny_video)
    out_json = tmp_path / "report.json"
    argv = ["data", "verify", "--protocol", "msvd", "--annotations", str(ann), "--videos", str(videos)]
    rc = main(argv + ["--allow-missing", "--no-open", "--json", str(out_json)])
    out = capsys.readouterr().out
    dropped_captions = sum(len(captions[v]) for v in gone)
    assert rc == 0
    assert f"DROPPED (--allow-missing): 4 test videos and {dropped_captions} captions" in out
    assert all(v in out for v in gone)
    record = json.loads(out_json.read_text())
    assert record["dropped"] == {"video_ids": gone, "num_videos": 4, "num_captions": dropped_captions}
    assert record["counts"]["test"]["videos"] == 666
    total = sum(len(captions[v]) for v in test_ids)
    assert record["counts"]["test"]["captions"] == total - dropped_captions


def test_corrupt_file_is_reported_unreadable_with_id_and_path(msvd, tiny_video, tmp_path):
    ann, test_ids, _ = msvd
    bad = test_ids[5]
    videos = _videos(tmp_path, [v for v in test_ids if v != bad], tiny_video)
    (videos / f"{bad}.mp4").write_bytes(np.random.default_rng(3).bytes(4096))
    report = verify("msvd", ann, videos, progress=False)
    assert not report.ok and not report.missing
    assert [(p.video_id, p.path) for p in report.unreadable] == [(bad, str(videos / f"{bad}.mp4"))]
    text = format_report(report)
    assert bad in text and str(videos / f"{bad}.mp4") in text and "unreadable" in text


def test_frame_folders_are_accepted(msvd, tiny_video, tmp_path):
    from PIL import Image

    ann, test_ids, _ = msvd
    folder_id = test_ids[0]
    videos = _videos(tmp_path, test_ids[1:], tiny_video)
    (videos / folder_id).mkdir()
    for k in range(1, 4):
        Image.new("RGB", (16, 16)).save(videos / folder_id / f"{k:08d}.jpg")
    assert verify("msvd", ann, videos, progress=False).ok


def test_edited_and_reformatted_lists(splits_dir, msvd, tiny_video, tmp_path):
    _, test_ids, captions = msvd
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "raw-captions.json").write_text(json.dumps(captions))
    # the public train list lacks its final newline: adding one is harmless
    (ann / "train_list.txt").write_text((splits_dir / "msvd" / "train_list.txt").read_text() + "\n")
    _link(ann, splits_dir / "msvd" / "val_list.txt")
    (ann / "test_list.txt").write_text("\n".join(test_ids[:-1]) + "\n")  # one test id removed
    videos = _videos(tmp_path, test_ids, tiny_video)
    report = verify("msvd", ann, videos, open_videos=False, progress=False)
    status = {c.file: c for c in report.split_checks}
    assert status["train_list.txt"].status == "reformatted"
    assert status["val_list.txt"].status == "ok"
    edited = status["test_list.txt"]
    assert (edited.status, edited.actual_count, edited.expected_count) == ("mismatch", 669, 670)
    assert not report.ok
    assert "test_list.txt" in format_report(report) and "669" in format_report(report)


def _msrvtt_ann(root: Path, splits_dir: Path, train_file: Path, name: str) -> Path:
    ann = root / "ann"
    _link(ann, train_file, name)
    _link(ann, splits_dir / "MSRVTT_JSFUSION_test.csv")
    sentences = [
        {"video_id": v, "caption": f"{v} caption", "sen_id": i} for i, v in enumerate(_ids(train_file))
    ]
    (ann / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    return ann


def test_msrvtt_1k_a_counts_1000_by_1000(splits_dir, tiny_video, tmp_path, capsys):
    ann = _msrvtt_ann(tmp_path, splits_dir, splits_dir / "MSRVTT_train.9k.csv", "MSRVTT_train.9k.csv")
    test_ids = _ids(splits_dir / "MSRVTT_JSFUSION_test.csv")
    videos = _videos(tmp_path, test_ids, tiny_video)
    report = verify("msrvtt-1k-a", ann, videos, progress=False)
    assert report.ok, format_report(report)
    assert report.counts["test"] == {"videos": 1000, "captions": 1000}
    assert report.counts["train"] == {"videos": 9000, "captions": 9000}
    split = load_split("msrvtt-1k-a", ann, "test")
    assert split.video_ids == test_ids and split.caption_video.tolist() == list(range(1000))
    argv = ["data", "verify", "--protocol", "msrvtt-1k-a", "--annotations", str(ann), "--videos", str(videos)]
    assert main(argv + ["--no-open", "--no-progress"]) == 0
    assert "1,000 videos" in capsys.readouterr().out


def test_7k_list_given_where_9k_is_expected_is_named(splits_dir, tiny_video, tmp_path, capsys):
    ann = _msrvtt_ann(tmp_path, splits_dir, splits_dir / "MSRVTT_train.7k.csv", "MSRVTT_train.9k.csv")
    videos = _videos(tmp_path, _ids(splits_dir / "MSRVTT_JSFUSION_test.csv"), tiny_video)
    report = verify("msrvtt-1k-a", ann, videos, open_videos=False, progress=False)
    check = next(c for c in report.split_checks if c.file == "MSRVTT_train.9k.csv")
    assert (check.status, check.actual_count, check.expected_count) == ("mismatch", 7010, 9000)
    assert "MSRVTT_train.7k.csv" in check.note
    assert not report.ok
    argv = ["data", "verify", "--protocol", "msrvtt-1k-a", "--annotations", str(ann), "--videos", str(videos)]
    assert main(argv + ["--no-open", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "[mismatch] MSRVTT_train.9k.csv: 7,010 ids; expected 9,000 ids" in out
    # the same files are exactly right for the 7k protocol once named as such
    os.rename(ann / "MSRVTT_train.9k.csv", ann / "MSRVTT_train.7k.csv")
    assert verify("msrvtt-1k-a-7k", ann, videos, open_videos=False, progress=False).ok


def test_vatex_1k5_counts_1500_videos_15000_captions(splits_dir, tiny_video, tmp_path):
    ann = tmp_path / "ann"
    train, test = splits_dir / "vatex" / "train_list.txt", splits_dir / "vatex" / "test1k5_sec_list.txt"
    _link(ann, train)
    _link(ann, test)
    test_ids = _ids(test)
    data = {v: {"enCap": [f"{v} train"]} for v in _ids(train)}
    data.update({v: {"enCap": [f"{v} caption {k}" for k in range(10)], "chCap": ["中文"]} for v in test_ids})
    (ann / "vatex_data.json").write_text(json.dumps(data, ensure_ascii=False))
    videos = _videos(tmp_path, test_ids, tiny_video)
    report = verify("vatex-1k5", ann, videos, progress=False)
    assert report.ok, format_report(report)
    assert report.counts["test"] == {"videos": 1500, "captions": 15000}
    assert report.counts["train"]["videos"] == 25991
    # a test video with 9 English captions breaks the 10-per-video protocol
    data[test_ids[7]]["enCap"].pop()
    (ann / "vatex_data.json").write_text(json.dumps(data, ensure_ascii=False))
    report = verify("vatex-1k5", ann, videos, open_videos=False, progress=False)
    assert not report.ok and any(test_ids[7] in p for p in report.count_problems)


def test_msrvtt_full_counts_2990_test_videos(splits_dir, tiny_video, tmp_path):
    ann = tmp_path / "ann"
    _link(ann, splits_dir / "MSRVTT_train.full.csv")
    _link(ann, splits_dir / "MSRVTT_test.full.csv")
    train_ids, test_ids = (
        _ids(splits_dir / "MSRVTT_train.full.csv"),
        _ids(splits_dir / "MSRVTT_test.full.csv"),
    )
    sentences = [{"video_id": v, "caption": f"{v} {k}"} for v in train_ids + test_ids for k in range(2)]
    (ann / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    videos = _videos(tmp_path, test_ids, tiny_video)
    report = verify("msrvtt-full", ann, videos, open_videos=False, progress=False)
    assert report.ok, format_report(report)
    assert report.counts["test"] == {"videos": 2990, "captions": 5980}
    assert report.counts["train"] == {"videos": 6513, "captions": 13026}


def test_require_test_videos_raises_or_drops(msvd, tiny_video, tmp_path):
    ann, test_ids, captions = msvd
    gone = [test_ids[0], test_ids[42]]
    videos = _videos(tmp_path, [v for v in test_ids if v not in gone], tiny_video)
    split = load_split("msvd", ann, "test")
    with pytest.raises(ProtocolError) as err:
        require_test_videos(split, videos, progress=False)
    assert all(v in str(err.value) for v in gone)
    kept = require_test_videos(split, videos, allow_missing=True, progress=False)
    assert kept.num_videos == 668
    assert kept.dropped == {
        "video_ids": gone,
        "num_videos": 2,
        "num_captions": sum(len(captions[v]) for v in gone),
    }
