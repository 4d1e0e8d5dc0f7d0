"""Each kind of extension is one file (issue 9 §3-4, docs/EXTENDING.md), run through the real code.

- a model: ``tests/support/toys/toy_model.py`` -> ``create_model`` -> the engine's encoders
  -> ``similarity`` -> the metrics core;
- a post-processor: ``tests/support/toys/toy_postprocess.py`` -> ``evaluate_embeddings(post=...)``;
- a protocol: ``tests/support/toys/toy_protocol.py`` (one reader, one entry) -> ``load_split``
  through the protocol registry, and a suite TOML given as a path;
- plugins: ``tests/plugin_pkg`` (entry points) and ``--import MODULE``.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.data import protocols
from clip2video.data.annotations import load_split
from clip2video.data.frames import FrameSampler
from clip2video.data.synthetic import generate_synthetic
from clip2video.data.text import CaptionTokenizer
from clip2video.engine import postprocess
from clip2video.engine.evaluate import encode_split, evaluate_embeddings
from clip2video.metrics import retrieval_metrics
from clip2video.models import create_model, list_models
from tests.support.toys import toy_model, toy_postprocess

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PLUGIN_DIR = TESTS / "plugin_pkg"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (6 test videos: 3 clips and their reversals), seconds to write."""
    return generate_synthetic(
        tmp_path_factory.mktemp("synthetic") / "data", seed=0, num_train=2, num_val=1, num_test_pairs=3
    )


# ----------------------------------------------------------------------------- a model


def test_toy_model_is_one_registered_file() -> None:
    assert "toy_mean_colour" in list_models()
    model = create_model("toy_mean_colour", dim=8, seed=1)
    assert isinstance(model, toy_model.MeanColourModel)
    assert model.config["name"] == "toy_mean_colour", "create_model stamps the registry name"
    rebuilt = create_model(**model.config)
    assert torch.equal(rebuilt.words, model.words), "create_model(**model.config) rebuilds the same model"


def test_toy_model_through_the_engine(synthetic_root: Path) -> None:
    """The real split loader, frame sampler, tokenizer, encoders and ranking core on the toy model."""
    split = load_split("synthetic", synthetic_root / "annotations", "test")
    model = create_model("toy_mean_colour", dim=8).eval()
    sampler = FrameSampler(max_frames=4, image_size=32)
    emb = encode_split(
        model,
        split,
        "synthetic",
        synthetic_root / "videos",
        sampler=sampler,
        tokenizer=CaptionTokenizer(max_words=16),
        cache=None,
        progress=False,
    )
    assert emb.text.shape == (split.num_captions, 8) and emb.video.shape == (split.num_videos, 8)
    result = evaluate_embeddings(model, emb, tie_policy="mean", keep_sim=True)
    sim = model.similarity(emb.text, emb.video)
    assert torch.allclose(result.sim, sim)
    assert result.metrics == retrieval_metrics(sim, split.caption_video, tie_policy="mean")
    assert 0.0 <= result.metrics["t2v_R1"] <= 100.0


def test_toy_model_takes_only_its_options() -> None:
    """A suite's ``[model]`` table may hold other models' options; the toy model gets only its own."""
    from clip2video.models import registry

    assert registry.declared_options("toy_mean_colour") == {"dim", "vocab_size", "seed"}
    model = registry.create_model_from_options(
        "toy_mean_colour", {"dim": 8, "temporal_layers": 1, "center_k": 5, "clip": "tiny"}
    )
    assert model.config == {"dim": 8, "vocab_size": 49408, "seed": 0, "name": "toy_mean_colour"}


# ----------------------------------------------------------------------------- a post-processor


def _toy_embeddings() -> tuple[toy_model.MeanColourModel, object]:
    from clip2video.engine.evaluate import Embeddings

    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    caption_video = np.repeat(np.arange(6), 2)
    model = toy_model.MeanColourModel(dim=8)
    return model, Embeddings(text, video, caption_video, [f"v{i}" for i in range(6)])


def test_toy_postprocessor_makes_a_marked_row() -> None:
    model, emb = _toy_embeddings()
    plain = evaluate_embeddings(model, emb, keep_sim=True)
    row = evaluate_embeddings(model, emb, post=toy_postprocess.ColumnCentring())
    expected = retrieval_metrics(plain.sim - plain.sim.mean(0, keepdim=True), emb.caption_video)
    assert row.row_name == "+centre"
    assert set(row.metrics) == {k for k in expected if k.startswith("t2v_")}
    assert row.metrics == {k: v for k, v in expected.items() if k.startswith("t2v_")}


def test_toy_postprocessor_is_registered() -> None:
    assert "centre" in postprocess.list_postprocessors()
    (built,) = postprocess.build_postprocessors(["centre"], ctx=None, model=None)
    assert isinstance(built, toy_postprocess.ColumnCentring)


# ----------------------------------------------------------------------------- a protocol


def _toy_protocol_files(root: Path, synthetic_root: Path) -> tuple[Path, Path]:
    """The toy protocol's files for the synthetic clips: id lists and a TSV of captions."""
    synthetic = {s: load_split("synthetic", synthetic_root / "annotations", s) for s in ("train", "test")}
    annotations = root / "toy-tsv" / "annotations"
    annotations.mkdir(parents=True)
    rows: list[str] = []
    for name, split in synthetic.items():
        (annotations / f"toy_{name}.txt").write_text("\n".join(split.video_ids) + "\n")
        rows += [
            f"{split.video_ids[v]}\t{c}" for c, v in zip(split.captions, split.caption_video, strict=True)
        ]
    (annotations / "toy_captions.tsv").write_text("\n".join(rows) + "\n")
    videos = root / "toy-tsv" / "videos"
    videos.symlink_to(synthetic_root / "videos", target_is_directory=True)
    return annotations, videos


def test_toy_reader_reads_its_files(tmp_path: Path, synthetic_root: Path) -> None:
    from tests.support.toys import toy_protocol

    annotations, _ = _toy_protocol_files(tmp_path, synthetic_root)
    # Today's Protocol accepts only the built-in layouts; the reader needs only the file names.
    proto = protocols.Protocol(
        name="toy-tsv",
        layout="vatex",
        stride=1,
        center_k=2,
        train_split="toy_train.txt",
        test_split="toy_test.txt",
        captions_file="toy_captions.tsv",
    )
    split = toy_protocol.read_split(proto, annotations, "test")
    expected = load_split("synthetic", synthetic_root / "annotations", "test")
    assert split.video_ids == expected.video_ids
    assert split.captions == expected.captions
    assert np.array_equal(split.caption_video, expected.caption_video)


def _toy_protocol_registered() -> object:
    return importlib.import_module("tests.support.toys.toy_protocol")


def test_toy_protocol_loads_through_the_registry(tmp_path: Path, synthetic_root: Path) -> None:
    toy_protocol = _toy_protocol_registered()
    annotations, _ = _toy_protocol_files(tmp_path, synthetic_root)
    assert protocols.get_protocol("toy-tsv") == toy_protocol.make_protocol()
    split = load_split("toy-tsv", annotations, "test")
    expected = load_split("synthetic", synthetic_root / "annotations", "test")
    assert (split.video_ids, split.captions) == (expected.video_ids, expected.captions)
    assert split.protocol == "toy-tsv"


def test_a_suite_file_names_the_toy_protocol_and_model(tmp_path: Path) -> None:
    """A suite given as a TOML path (not a shipped name) validates with the toy extensions."""
    _toy_protocol_registered()
    from clip2video.experiments.suite import load_suite

    path = tmp_path / "toy.toml"
    path.write_text(
        'name = "toy"\nprotocol = "toy-tsv"\nmodels = ["toy_mean_colour"]\nseeds = [0]\n'
        '[eval]\npostprocess = ["centre"]\n'
    )
    suite = load_suite(str(path))
    assert suite.settings["protocol"] == "toy-tsv"
    assert suite.settings["models"] == ["toy_mean_colour"]


# ----------------------------------------------------------------------------- plugins


def _cli_env(*paths: Path) -> dict[str, str]:
    """The environment for a subprocess: ``paths``, then the repository root (``tests.support.toys``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), str(REPO)])
    return env


def test_entry_point_plugin_registers_a_model_and_a_protocol() -> None:
    """An installed package's ``clip2video.models`` / ``clip2video.protocols`` entry points load."""
    code = (
        "from clip2video.plugins import load_entry_points\n"
        "load_entry_points()\n"
        "from clip2video.models import list_models\n"
        "from clip2video.data.protocols import list_protocols\n"
        "print('toy_plugin_model' in list_models(), 'toy-plugin' in list_protocols())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_cli_env(PLUGIN_DIR), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"], proc.stdout
    cli = subprocess.run(
        [sys.executable, "-m", "clip2video", "data", "protocols"],
        env=_cli_env(PLUGIN_DIR),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert "toy-plugin" in cli.stdout


def test_installed_plugins_load_from_python_without_the_command_line() -> None:
    """``clip2video.list_models()``, ``create_model``, ``get_protocol`` and the post-processor
    registry see an installed package's entry points on first use, with no ``load_entry_points()``."""
    code = (
        "import clip2video\n"
        "from clip2video.data.protocols import get_protocol\n"
        "from clip2video.engine.postprocess import build_postprocessors\n"
        "print('toy_plugin_model' in clip2video.list_models())\n"
        "print(type(clip2video.create_model('toy_plugin_model', dim=4)).__name__)\n"
        "print(get_protocol('toy-plugin').layout)\n"
        "print(build_postprocessors(['negate'], ctx=None, model=None)[0].row_name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_cli_env(PLUGIN_DIR), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "PluginModel", "vatex", "+negate"], proc.stdout


def test_every_registry_is_one_registry_with_its_entry_point_group() -> None:
    from clip2video import plugins
    from clip2video.data.protocols import PROTOCOLS, READERS
    from clip2video.engine.postprocess import POSTPROCESSORS
    from clip2video.metrics import METRICS
    from clip2video.models.registry import MODELS
    from clip2video.registry import Registry, all_registries

    registries = (MODELS, PROTOCOLS, READERS, POSTPROCESSORS, METRICS)
    assert all(isinstance(r, Registry) and r in all_registries() for r in registries)
    assert {r.group for r in registries} == set(plugins.GROUPS)


def _user_models(name: str) -> str:
    """A user's module registering the model ``name`` (importing it is enough)."""
    return (
        "from clip2video.models import register_model\n\n\n"
        f"@register_model(name={name!r})\n"
        "def build(dim: int = 8):\n"
        "    raise NotImplementedError\n"
    )


_IMPORT_EACH = """\
import sys
from clip2video.cli import main
from clip2video.models import list_models
for value in sys.argv[1:]:
    code = main(["--import", value, "data", "protocols"])
    print("RESULT", value, code, file=sys.stderr)
print("MODELS", *sorted(m for m in list_models() if m.startswith("user_")), file=sys.stderr)
"""


def test_import_flag_takes_a_module_of_the_current_folder_or_a_file_path(tmp_path: Path) -> None:
    """``--import my_models`` from the folder that holds ``my_models.py`` (no ``PYTHONPATH=.``),
    ``--import ./their_models.py`` and an absolute path; anything else is one error line. The
    process runs as the console script does: the current folder is not on ``sys.path`` (``python
    -P``; ``python -m`` would put it there)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("not Python")
    for stem in ("my_models", "their_models", "far_models"):
        (project / f"{stem}.py").write_text(_user_models(f"user_{stem}"))
    values = [
        "my_models",
        "./their_models.py",
        str(project / "far_models.py"),
        "./nope.py",
        "nope_c2v",
        "./notes.txt",
    ]
    proc = subprocess.run(
        [sys.executable, "-P", "-c", _IMPORT_EACH, *values],
        cwd=project,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    results = {line.split()[1]: int(line.split()[2]) for line in lines if line.startswith("RESULT")}
    assert results == dict(zip(values, [0, 0, 0, 1, 1, 1], strict=True)), proc.stderr
    assert lines[-1].split() == ["MODELS", "user_far_models", "user_my_models", "user_their_models"]
    errors = [line for line in lines if line.startswith("clip2video: error:")]
    assert errors == [
        f"clip2video: error: --import ./nope.py: no such file ({project / 'nope.py'}); pass an existing .py "
        "file or a module name",
        "clip2video: error: --import nope_c2v: no module named 'nope_c2v' (not installed, not on PYTHONPATH, "
        f"not in the current folder {project}); pass an importable module name or a file path (--import "
        "./nope_c2v.py)",
        "clip2video: error: --import ./notes.txt: not a Python file (.py); pass a .py file or a module name",
    ], errors


def test_import_flag_imports_a_user_module(capsys: pytest.CaptureFixture[str]) -> None:
    """``--import MODULE`` imports a module that is no installed package before the verb runs."""
    from clip2video.cli import main

    assert "toy_import_only" not in list_models()
    assert main(["--import", "tests.support.toys.toy_import_only", "data", "protocols"]) == 0
    assert "toy_import_only" in list_models()
    assert main(["data", "protocols", "--import", "no_such_module_c2v"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("clip2video: error: --import no_such_module_c2v"), err


def extending_block(marker: str) -> str:
    """The fenced block of docs/EXTENDING.md whose first line is ``marker`` (e.g. ``# toys.toml``)."""
    text = (REPO / "docs" / "EXTENDING.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if b.startswith(marker + "\n")]
    return block


# The suite docs/EXTENDING.md shows, as written (it must run offline).
TOY_SUITE = extending_block("# toys.toml")


def test_toy_model_and_postprocessor_run_in_a_suite_from_the_command_line(tmp_path: Path) -> None:
    """``clip2video ablation --suite toy.toml --import ...``: the user's modules reach the row workers.

    The rows run in worker processes (forkserver / spawn), which do not inherit what the parent
    registered: the worker must import the same plugins and ``--import`` modules before it builds the
    row: the row spec carries the ``--import`` modules.
    """
    suite = tmp_path / "toy.toml"
    suite.write_text(TOY_SUITE)
    command = [
        sys.executable,
        "-m",
        "clip2video",
        "ablation",
        "--suite",
        str(suite),
        "--import",
        "tests.support.toys.toy_model",
        "--import",
        "tests.support.toys.toy_postprocess",
        "--no-tracking",
        "--data-root",
        str(tmp_path / "data"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=_cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(command[2:])} failed:\n{proc.stderr[-3000:]}"
    rows = {p.name for p in (tmp_path / "runs" / "toys").iterdir() if p.is_dir()}
    assert "toy_mean_colour" in rows, rows
    assert "+centre" in proc.stdout + "".join(p.read_text() for p in (tmp_path / "results").rglob("*.md")), (
        "the post-processed row is missing from the output and the tables"
    )
