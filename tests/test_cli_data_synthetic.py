"""`clip2video data synthetic` writes the same dataset as the library call, deterministically."""

from __future__ import annotations

import json

from clip2video.cli import main
from clip2video.data.synthetic import generate_synthetic


def test_cli_matches_library_and_is_idempotent(tmp_path):
    args = ["--seed", "3", "--num-train", "4", "--num-val", "2", "--num-test-pairs", "2"]
    assert main(["data", "synthetic", str(tmp_path / "cli"), *args]) == 0
    generate_synthetic(tmp_path / "lib", seed=3, num_train=4, num_val=2, num_test_pairs=2)
    for name in ("synthetic_data.json", "train_list.txt", "val_list.txt", "test_list.txt"):
        assert (tmp_path / "cli/annotations" / name).read_bytes() == (
            tmp_path / "lib/annotations" / name
        ).read_bytes()
    test_ids = (tmp_path / "cli/annotations/test_list.txt").read_text().split()
    assert len(test_ids) == 4
    data = json.loads((tmp_path / "cli/annotations/synthetic_data.json").read_text())
    assert all(len(data[v]["enCap"]) == 2 for v in test_ids)
    before = (tmp_path / "cli/videos").stat().st_mtime_ns
    assert main(["data", "synthetic", str(tmp_path / "cli"), *args]) == 0  # same settings: nothing rewritten
    assert (tmp_path / "cli/videos").stat().st_mtime_ns == before
    assert main(["data", "synthetic", str(tmp_path / "cli"), "--seed", "4"]) == 1  # differs: refused
