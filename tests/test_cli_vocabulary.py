"""One flag vocabulary, package data and the ``eval`` verb (issue 9 §5, §8; issue 11 §2, §4, §9)."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import pytest

import clip2video
from clip2video.cli import build_parser, main
from clip2video.experiments.suite import load_suite, shipped_suites
from tests.support.protocol_fixtures import (
    TINY_BACKBONE,
    build_protocol_data,
    tiny_cli_sets,
)
from tests.support.tiny_clip import tiny_official_checkpoint

VERBS_WITH_OUTPUTS = ("ablation", "eval", "tables", "drift")


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", VERBS_WITH_OUTPUTS)
def test_every_verb_takes_the_same_folder_flags_with_one_default_each(capsys, verb):
    text = help_text(capsys, verb)
    for flag in ("--runs-dir", "--suite" if verb != "eval" else "--protocol", "--import", "--debug"):
        assert flag in text, (verb, flag)
    if verb != "drift":
        assert "--results-dir" in text
    for block in re.split(r"\n  (?=-)", text):
        assert block.count("(default:") + block.count("unset:") <= 1, block
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--runs " not in text and "--out " not in text  # old spellings stay hidden


def test_old_tables_flags_still_work(tmp_path, capsys):
    code = main(
        ["tables", "--runs", str(tmp_path / "old-runs"), "--out", str(tmp_path / "res"), "--no-plots"]
    )
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "old-runs") in err and "Traceback" not in err  # the alias was read


def test_shipped_suites_and_paper_rows_are_package_data():
    package = Path(str(resources.files("clip2video")))
    assert {"ablation", "smoke", "msrvtt-1k-a", "msrvtt-full", "msvd", "vatex-1k5", "vatex-hgr"} <= set(
        shipped_suites()
    )
    assert load_suite("smoke").path.parent == package / "suites"
    assert load_suite("msrvtt-full").protocol == "msrvtt-full"
    from clip2video.report.tables import PAPER_DIR

    assert Path(PAPER_DIR) == package / "paper" and (Path(PAPER_DIR) / "clip2video.csv").is_file()


def test_suite_by_path_on_tables_and_drift(tmp_path, capsys):
    custom = tmp_path / "mine.toml"
    custom.write_text('name = "mine"\nprotocol = "synthetic"\nmodels = ["meanp"]\n')
    code = main(["tables", "--suite", str(custom), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and "mine" in err and "Traceback" not in err  # no records of suite 'mine' yet
    code = main(["drift", "--suite", str(custom), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and "mine" in err and "Traceback" not in err


def test_parser_has_every_verb():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"data", "ablation", "eval", "tables", "drift"} <= set(sub.choices)


# ----------------------------------------------------------------------------- eval and data folders


def test_eval_verb_one_row_from_a_shared_dataset_folder(tmp_path, capsys, synthetic_source):
    """``clip2video eval`` evaluates one checkpoint without a suite file, reading DATA/vatex/ (the
    folder vatex-1k5 and vatex-hgr share), and writes one JSON result plus the table."""
    data = build_protocol_data("vatex-1k5", tmp_path / "datasets", synthetic_source)
    (tmp_path / "datasets" / "vatex-1k5").rename(tmp_path / "datasets" / "vatex")
    ckpt = tiny_official_checkpoint(
        "clip2video", tmp_path / "pytorch_model.bin.2", seed=1, clip=TINY_BACKBONE, temporal_layers=1
    )
    argv = ["eval", "--protocol", "vatex-1k5", "--model", "clip2video", "--checkpoint", str(ckpt)]
    argv += ["--data-root", str(data.data_root), "--no-tracking", "--no-progress"]
    argv += [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        *tiny_cli_sets(),
    ]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = tmp_path / "results" / "eval-vatex-1k5-clip2video"
    result = json.loads((out / "result.json").read_text())
    assert result["format"] == "clip2video-result/1" and result["protocol"] == "vatex-1k5"
    assert result["package"]["version"] == clip2video.__version__ and result["date"].endswith("Z")
    assert {"platform", "code", "data"} <= set(result["fingerprint"])
    (row,) = result["rows"]
    assert row["row"] == "clip2video" and row["runs"] == "1 checkpoint"
    (checkpoint,) = row["checkpoints"]
    assert checkpoint["path"] == str(ckpt.resolve()) and checkpoint["role"] == "evaluated"
    assert checkpoint["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert 0 <= row["metrics"]["t2v_R1"]["mean"] <= 100 and row["metrics"]["t2v_R1"]["per_seed"]
    assert (out / "table.md").is_file() and (out / "eval-vatex-1k5-clip2video_r1.png").is_file()
    assert not list(out.glob("ablation_r1.*"))  # the plot is named after the eval, not "ablation"
    assert "± n/a" not in (out / "table.md").read_text() and "1 checkpoint" in (out / "table.md").read_text()
    assert "result.json" in captured.out


def test_eval_needs_a_checkpoint_or_zero_shot(capsys):
    assert main(["eval", "--protocol", "msvd", "--model", "clip2video"]) == 1
    assert "--checkpoint FILE" in capsys.readouterr().err
