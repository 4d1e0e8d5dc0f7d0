"""Issue 10 through the command line, as a user meets each fault: one ``clip2video: error: ...``
line naming the file, key or id, a non-zero exit, and nothing written or lost.

Each case failed on the main branch before this module (a traceback, a misleading message, a
silent drop, or an error only after training). Checks that run before work need no training: the
cases finish in seconds. The few real runs evaluate one zero-shot row of a tiny backbone.
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clip2video.cli import main
from tests.support.protocol_fixtures import (
    build_protocol_data,
    tiny_vatex_argv,
    verify_argv,
)

SMOKE = ["--suite", "smoke", "--models", "meanp", "--no-tracking", "--no-progress"]


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """Run ``clip2video ARGV`` in this process; (exit code, stderr)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def error_line(code: int, err: str, *named: str, exit_code: int = 1) -> str:
    """The one error line: exit code, no traceback, exactly one ``clip2video: error:`` line naming ``named``."""
    assert code == exit_code, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("clip2video: error:")]
    assert len(lines) == 1, err
    for name in named:
        assert str(name) in lines[0], (name, lines[0])
    print(lines[0])  # shown with pytest -rP: what each fault now prints
    return lines[0]


def outputs(root: Path) -> list[str]:
    """What a command left under ``root`` (nothing, for a failure before work)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def smoke(root: Path, *extra: str) -> list[str]:
    """``ablation`` on the smoke suite with every output under ``root``."""
    return [
        "ablation",
        *SMOKE,
        "--data-root",
        str(root / "data"),
        "--runs-dir",
        str(root / "runs"),
        "--results-dir",
        str(root / "results"),
        *extra,
    ]


# ----------------------------------------------------------------------------- settings, before work


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("train.epochs=0", "train.epochs = 0"),
        ("train.batch_size=0", "train.batch_size = 0"),
        ("frames.max_frames=0", "frames.max_frames = 0"),
        ('seeds=["a"]', "seeds: 'a'"),
        ("seeds=[]", "'seeds' must hold at least one"),
        ("eval.tie_policy=bogus", "eval.tie_policy = 'bogus'"),
        ("eval.v2t=bogus", "eval.v2t = 'bogus'"),
        ('eval.postprocess=["zz"]', "Unknown post-processor 'zz'. Available: "),
    ],
)
def test_out_of_range_or_unknown_setting_fails_before_any_work(tmp_path, capsys, setting, named):
    code, err = cli(capsys, *smoke(tmp_path, "--set", setting))
    error_line(code, err, named, "smoke.toml")
    assert outputs(tmp_path) == []  # no data generated, no record written


def test_unknown_model_fails_before_the_first_row_trains(tmp_path, capsys):
    code, err = cli(capsys, *smoke(tmp_path, "--models", "meanp", "nope"))
    error_line(code, err, "Unknown model 'nope'. Available: clip2video, meanp, seqtransf, tab, tdb")
    assert outputs(tmp_path) == []


def test_unknown_suite_and_protocol_name_the_available_ones(tmp_path, capsys):
    code, err = cli(capsys, *smoke(tmp_path, "--suite", "smokey"))
    error_line(code, err, "Unknown suite 'smokey'. Available:", "msrvtt-full", "smoke")
    code, err = cli(capsys, "eval", "--protocol", "msrvt", "--model", "meanp", "--zero-shot")
    error_line(
        code, err, "Unknown protocol 'msrvt'. Did you mean one of 'msrvtt-1k-a'", "Available: msrvtt-1k-a"
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--size", "31", "31"], "--size H W"),
        (["--num-train", "-1"], "--num-train"),
    ],
)
def test_synthetic_generator_settings_out_of_range(tmp_path, capsys, args, named):
    code, err = cli(capsys, "data", "synthetic", tmp_path / "syn", *args)
    error_line(code, err, named)
    assert not (tmp_path / "syn").exists()


# ----------------------------------------------------------------------------- output folders


@pytest.mark.parametrize("flag", ["--runs-dir", "--results-dir", "--data-root"])
def test_output_folder_that_is_a_file(tmp_path, capsys, flag):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    argv = smoke(tmp_path / "out")
    argv[argv.index(flag) + 1] = str(blocker / "sub")
    code, err = cli(capsys, *argv)
    error_line(code, err, str(blocker))
    assert outputs(tmp_path / "out") == [] and blocker.read_text() == "a file"


def test_unwritable_runs_dir_names_it_and_the_reason(tmp_path, capsys):
    target = Path("/proc/clip2video-cannot-write-here")
    code, err = cli(capsys, *smoke(tmp_path, "--runs-dir", target))
    error_line(code, err, str(target), "--runs-dir")
    assert outputs(tmp_path) == []


def test_tables_output_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("a file")
    code, err = cli(capsys, "tables", "--runs-dir", tmp_path / "runs", "--results-dir", out)
    error_line(code, err, str(out), "--results-dir")
    code, err = cli(capsys, "tables", "--runs", tmp_path / "runs", "--out", out)  # the old spelling
    error_line(code, err, str(out))


def test_bogus_tracking_uri(tmp_path, capsys):
    argv = [a for a in smoke(tmp_path) if a != "--no-tracking"]
    code, err = cli(capsys, *argv, "--tracking-uri", "bogus://nowhere")
    error_line(code, err, "--tracking-uri bogus://nowhere", "sqlite:///", "--no-tracking")
    assert outputs(tmp_path) == []


# ----------------------------------------------------------------------------- checkpoints and weights


def _not_a_checkpoint(path: Path, kind: str) -> Path:
    if kind == "random bytes":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "truncated zip":
        torch.save({"w": torch.zeros(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:  # a bare tensor
        torch.save(torch.zeros(3), path)
    return path


@pytest.mark.parametrize("kind", ["random bytes", "text", "truncated zip", "bare tensor"])
def test_checkpoint_that_is_not_one_fails_before_work(tmp_path, capsys, kind):
    ckpt = _not_a_checkpoint(tmp_path / "model.bin", kind)
    code, err = cli(capsys, *smoke(tmp_path / "out", "--eval-only", "--checkpoint", f"meanp={ckpt}"))
    error_line(code, err, str(ckpt))
    assert outputs(tmp_path / "out") == []


def test_missing_checkpoint_and_clip_weights_files(tmp_path, capsys):
    code, err = cli(capsys, *smoke(tmp_path, "--eval-only", "--checkpoint", f"meanp={tmp_path / 'no.bin'}"))
    error_line(code, err, str(tmp_path / "no.bin"), "does not exist")
    code, err = cli(capsys, *smoke(tmp_path, "--clip-weights", tmp_path / "ViT-B-32.pt"))
    error_line(code, err, "--clip-weights", str(tmp_path / "ViT-B-32.pt"))
    assert outputs(tmp_path) == []


# ----------------------------------------------------------------------------- annotations


@pytest.fixture
def vatex(tmp_path, synthetic_source):
    """A tiny vatex-1k5 dataset of real files (videos copied, so a test may corrupt one)."""
    data = build_protocol_data("vatex-1k5", tmp_path / "datasets", synthetic_source)
    for video in data.videos.iterdir():
        if video.is_symlink():
            target = video.resolve()
            video.unlink()
            shutil.copyfile(target, video)
    return data


@pytest.mark.parametrize("name", ["train_list.txt", "test1k5_sec_list.txt", "vatex_data.json"])
def test_annotation_file_that_is_not_utf8(vatex, tmp_path, capsys, name):
    path = vatex.annotations / "vatex" / name
    path.write_bytes(path.read_bytes()[:20] + b"\xff\xfe caf\xe9 \n" + path.read_bytes()[20:])
    code, err = cli(capsys, *verify_argv(vatex))
    error_line(code, err, str(path), "not UTF-8", "offset 20")
    if name == "train_list.txt":  # an evaluation reads only the test split's files; training reads it
        code, err = cli(capsys, *tiny_vatex_argv(vatex, tmp_path / "eval", "--eval-only"))
        assert code == 0, err
        code, err = cli(capsys, *tiny_vatex_argv(vatex, tmp_path / "out"))
    else:
        code, err = cli(capsys, *tiny_vatex_argv(vatex, tmp_path / "out", "--eval-only"))
    error_line(code, err, str(path), "not UTF-8")
    assert outputs(tmp_path / "out") == []


def test_duplicated_key_in_a_captions_json_is_an_error_naming_it(vatex, tmp_path, capsys):
    path = vatex.annotations / "vatex" / "vatex_data.json"
    first = vatex.test_ids[0]
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.rstrip()[:-1] + f', "{first}": {{"enCap": ["a later duplicate"]}}}}', encoding="utf-8"
    )
    code, err = cli(capsys, *verify_argv(vatex))
    error_line(code, err, str(path), f"key {first!r} appears more than once")


def test_convert_msvd_missing_file_and_not_a_pickle(tmp_path, capsys):
    code, err = cli(capsys, "data", "convert-msvd", "--pickle", tmp_path / "raw-captions.pkl")
    error_line(code, err, str(tmp_path / "raw-captions.pkl"), "does not exist")
    bad = tmp_path / "notes.pkl"
    bad.write_text("not a pickle\n")
    code, err = cli(capsys, "data", "convert-msvd", "--pickle", bad)
    error_line(code, err, str(bad), "not a readable pickle")
    assert not bad.with_suffix(".json").exists()


def test_convert_msvd_writes_the_file_the_protocol_reads_by_default(tmp_path, capsys):
    pkl = tmp_path / "raw-captions.pkl"
    pkl.write_bytes(pickle.dumps({"vid1": [["a", "cat"], ["the", "cat", "runs"]]}))
    code, err = cli(capsys, "data", "convert-msvd", "--pickle", pkl)
    assert code == 0, err
    assert json.loads((tmp_path / "raw-captions.json").read_text()) == {"vid1": ["a cat", "the cat runs"]}


# ----------------------------------------------------------------------------- videos


def test_missing_train_video_is_reported_as_train_before_training(vatex, tmp_path, capsys):
    gone = vatex.train_ids[3]
    next(vatex.videos.glob(f"{gone}.*")).unlink()
    code, err = cli(capsys, *tiny_vatex_argv(vatex, tmp_path / "out"))
    line = error_line(code, err, gone, "train video")
    assert "test video" not in line
    assert outputs(tmp_path / "out") == []


def test_missing_test_video_hint_names_the_setting_that_exists(vatex, tmp_path, capsys):
    gone = vatex.test_ids[2]
    next(vatex.videos.glob(f"{gone}.*")).unlink()
    code, err = cli(capsys, *tiny_vatex_argv(vatex, tmp_path / "out", "--eval-only"))
    error_line(code, err, gone, "--set data.allow_missing=true")
    assert outputs(tmp_path / "out") == []


def test_allow_missing_drops_an_unreadable_test_video_like_verify(vatex, tmp_path, capsys):
    from clip2video.engine.records import read_run_record

    broken = vatex.test_ids[1]
    next(vatex.videos.glob(f"{broken}.*")).write_bytes(b"\x00not a video" * 100)
    main([str(a) for a in verify_argv(vatex, "--allow-missing")])
    shown = capsys.readouterr()
    assert "DROPPED" in shown.out and broken in shown.out and "Traceback" not in shown.err
    argv = tiny_vatex_argv(vatex, tmp_path / "out", "--eval-only", "--set", "data.allow_missing=true")
    code, err = cli(capsys, *argv)
    assert code == 0, err
    record = read_run_record(tmp_path / "out" / "runs" / "vatex-1k5" / "meanp-zeroshot")
    assert record.extra["dropped"]["video_ids"] == [broken]
    assert record.extra["dropped"]["num_videos"] == 1


# ----------------------------------------------------------------------------- interruptions and the disk


@pytest.fixture
def failing_run(monkeypatch):
    """Make the suite run (after its checks) raise the given exception."""

    def arm(exc: BaseException) -> None:
        import clip2video.pipeline as pipeline

        def boom(*args, **kwargs):
            raise exc

        monkeypatch.setattr(pipeline, "run_checked", boom)

    return arm


def test_ctrl_c_says_how_to_continue_and_exits_130(tmp_path, capsys, failing_run):
    failing_run(KeyboardInterrupt())
    code, err = cli(capsys, *smoke(tmp_path))
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "clip2video: interrupted; continue with --resume"


def test_full_disk_names_the_file_and_enospc(tmp_path, capsys, failing_run):
    target = tmp_path / "runs" / "smoke" / "meanp" / "sim.npy"
    failing_run(OSError(errno.ENOSPC, "No space left on device", str(target)))
    code, err = cli(capsys, *smoke(tmp_path))
    error_line(code, err, str(target), "No space left on device (ENOSPC)", "--resume")


def test_debug_shows_the_traceback(tmp_path, capsys, failing_run):
    failing_run(OSError(errno.EACCES, "Permission denied", str(tmp_path / "x")))
    code, err = cli(capsys, *smoke(tmp_path), "--debug")
    assert code == 1 and "Traceback" in err and "PermissionError" in err
    assert err.strip().splitlines()[-1].startswith("clip2video: error:")


def test_warnings_print_once_without_the_source_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "noisy_plugin.py").write_text(
        "import warnings\nfor _ in range(3):\n    warnings.warn('split files differ from the public ones')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = cli(capsys, "data", "protocols", "--import", "noisy_plugin")
    assert code == 0, err
    assert err.splitlines() == ["clip2video: warning: split files differ from the public ones"]


# ----------------------------------------------------------------------------- plugins


def test_import_registers_a_users_model_and_protocol(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_ext.py").write_text(
        textwrap.dedent(
            """
            from clip2video.data.protocols import Protocol, register_protocol
            from clip2video.models import create_model
            from clip2video.models.registry import register_model, is_model

            if not is_model("my_meanp"):
                @register_model
                def my_meanp(**options):
                    return create_model("meanp", **options)

            register_protocol(Protocol(name="my-vatex", layout="vatex", stride=1, center_k=7,
                train_split="train_list.txt", test_split="test_list.txt", captions_file="vatex_data.json"))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out_err = main(["data", "protocols", "--import", "my_ext"]), capsys.readouterr()
    assert code == 0 and "my-vatex" in out_err.out
    # the plugin's model passes the suite's model check (the run then stops at a data root that is a file)
    (tmp_path / "f").write_text("")
    code, err = cli(
        capsys, "--import", "my_ext", *smoke(tmp_path, "--models", "my_meanp", "--data-root", tmp_path / "f")
    )
    error_line(code, err, str(tmp_path / "f"))
    code, err = cli(capsys, "data", "protocols", "--import", "no_such_module_here")
    error_line(code, err, "--import no_such_module_here")
    import os

    from clip2video.plugins import ENV_VAR, load_plugins

    assert ENV_VAR not in os.environ  # the in-process command left the environment as it found it
    monkeypatch.setenv(ENV_VAR, "my_ext")  # what a row worker inherits from `--import my_ext`
    load_plugins()


def test_entry_point_plugin_is_loaded_at_start(tmp_path):
    """A package installed with a ``clip2video.protocols`` entry point is known to every verb."""
    site = tmp_path / "site"
    (site / "toy_plugin").mkdir(parents=True)
    (site / "toy_plugin" / "__init__.py").write_text(
        "from clip2video.data.protocols import Protocol\n"
        "PROTOCOL = Protocol(name='toy-proto', layout='vatex', stride=1, center_k=3,\n"
        "    train_split='train_list.txt', test_split='test_list.txt', captions_file='vatex_data.json')\n"
    )
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[clip2video.protocols]\ntoy = toy_plugin:PROTOCOL\n")
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{site}:{root}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "clip2video", "data", "protocols"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "toy-proto" in out.stdout
