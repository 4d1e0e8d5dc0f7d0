"""Settings as typed, frozen objects (issue 17 §5), variant rows and tables in suite files (issue 16
§2), ``base = ...`` (issue 19 §6), and every value checked before any work (issue 18 §11-12)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from clip2video.cli import main
from clip2video.engine.train import TrainConfig
from clip2video.experiments.suite import SuiteError, load_suite, shipped_suites
from clip2video.settings import (
    SECTIONS,
    FrozenMapping,
    Settings,
    TrainSettings,
    default_settings,
    merge_assignments,
)

PROTOCOL_KEYS = {"frames": ["extraction_fps", "stride", "max_frames", "image_size"], "text": ["max_words"]}


def test_each_section_has_exactly_the_keys_of_defaults_toml_in_order():
    """No default is written in code: the classes name defaults.toml's keys (plus the protocol's)."""
    defaults = default_settings()
    for name, cls in SECTIONS.items():
        keys = list(defaults[name]) + PROTOCOL_KEYS.get(name, []) + (["center_k"] if name == "model" else [])
        assert [f.name for f in dataclasses.fields(cls)] == keys, name
    top = [k for k, v in defaults.items() if not isinstance(v, dict)]
    assert list(Settings.TOP_LEVEL) == top


def test_train_config_takes_its_defaults_from_defaults_toml():
    from clip2video.engine.train import ROW_TRAIN_KEYS

    train = TrainSettings.defaults()
    config = TrainConfig()
    for key, value in train.to_dict().items():
        if key in ROW_TRAIN_KEYS:  # train.backbone: what the row feeds the trainer, not a trainer setting
            assert not hasattr(config, key), key
            continue
        assert getattr(config, key) == value, key
    assert TrainConfig.from_settings(train, seed=3).to_dict() == {**config.to_dict(), "seed": 3}


@pytest.mark.parametrize("name", shipped_suites())
def test_to_dict_is_the_plain_json_and_round_trips(name):
    suite = load_suite(name)
    plain = suite.settings.to_dict()
    assert json.dumps(plain, allow_nan=False)  # plain JSON, no NaN
    assert dict(suite.settings) == plain  # the Mapping view old code reads
    assert Settings.from_dict(plain, name) == suite.settings
    assert pickle.loads(pickle.dumps(suite.settings)) == suite.settings
    assert suite.settings.train.epochs == plain["train"]["epochs"] == suite["train"]["epochs"]


def test_train_backbone_is_finetune_or_frozen():
    assert load_suite("smoke").settings.train.backbone == "finetune"  # the default: today's rows
    assert load_suite("smoke", {"train": {"backbone": "frozen"}}).settings.train.backbone == "frozen"
    with pytest.raises(SuiteError, match=r"train\.backbone = 'freeze': choose one of finetune, frozen"):
        load_suite("smoke", {"train": {"backbone": "freeze"}})


def test_settings_are_frozen():
    settings = load_suite("smoke").settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.backbone.config["embed_dim"] = 1  # type: ignore[index]
    assert isinstance(settings.backbone.config, FrozenMapping)
    assert isinstance(settings.eval.postprocess, tuple) and isinstance(settings.seeds, tuple)


# ----------------------------------------------------------------------------- values (issue 18 §11-12)


def cli_error(capsys, tmp_path, *argv: str) -> str:
    """Run ``clip2video`` and return its stderr; it must fail before any data or record is written."""
    code = main(
        [*argv, "--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"), "--no-tracking"]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
    return err


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("train.clip_grad=NaN", "train.clip_grad = nan is not a finite number"),
        ("train.lr=Infinity", "train.lr = inf is not a finite number"),
        ("model.center_weight=NaN", "model.center_weight = nan"),
        ("train.warmup=1.0", "train.warmup = 1.0 is out of range: it must be in [0.0, 1.0)"),
        ("seeds=[4294967296]", "seeds: 4294967296 is not an integer in [0, 2**32)"),
        ("synthetic.seed=4294967296", "synthetic.seed = 4294967296 is out of range"),
        ("backbone.config.init_logit_scale=NaN", "backbone.config.init_logit_scale = nan"),
    ],
)
def test_values_that_cannot_run_are_refused_before_work(tmp_path, capsys, setting, named):
    err = cli_error(capsys, tmp_path, "ablation", "--suite", "smoke", "--set", setting)
    assert named in err and err.count("\n") == 1, err


def test_nan_in_a_suite_file_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('base = "smoke"\n[train]\nlr = nan\n')
    with pytest.raises(SuiteError, match=r"train\.lr = nan is not a finite number"):
        load_suite(path)


def test_a_typo_in_backbone_config_names_the_key_and_open_clips_fields(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('base = "smoke"\n[backbone.config.vision_cfg]\nwidht = 64\n')
    with pytest.raises(
        SuiteError, match=r"backbone\.config\.vision_cfg\.widht'; did you mean 'width'\?"
    ) as info:
        load_suite(path)
    assert "CLIPVisionCfg" in str(info.value)
    path.write_text('base = "smoke"\n[backbone.config]\nembed_dims = 64\n')
    with pytest.raises(SuiteError, match=r"backbone\.config\.embed_dims'; did you mean 'embed_dim'"):
        load_suite(path)


def test_a_width_that_gives_no_heads_fails_in_the_check_before_work(tmp_path, capsys):
    """The dry build (meta device, no weights) of each distinct model config, before any data."""
    suite = tmp_path / "narrow.toml"
    suite.write_text('base = "smoke"\nmodels = ["tdb"]\n[backbone.config.vision_cfg]\nwidth = 32\n')
    err = cli_error(capsys, tmp_path, "ablation", "--suite", str(suite))
    assert "row 'tdb' (model 'tdb') cannot be built from its settings" in err
    assert "num_heads=0" in err


def test_set_changes_one_key_of_backbone_config():
    suite = load_suite("smoke", merge_assignments(["backbone.config.vision_cfg.layers=2"]))
    vision = suite.settings.backbone.config["vision_cfg"]
    assert vision["layers"] == 2 and vision["width"] == 64 and vision["patch_size"] == 16


# ----------------------------------------------------------------------------- base = "..."


def test_a_suite_file_inherits_a_shipped_suite_with_base(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "smoke"\nmodels = ["meanp"]\n[train]\nepochs = 1\n')
    mine, smoke = load_suite(path), load_suite("smoke")
    assert mine.name == "mine"  # its own suite: never the base's records folder
    assert mine.models == ["meanp"] and mine.settings.train.epochs == 1
    assert mine.settings.train.batch_size == smoke.settings.train.batch_size
    assert mine.settings.backbone == smoke.settings.backbone
    child = tmp_path / "sub" / "child.toml"
    child.parent.mkdir()
    child.write_text('base = "../mine.toml"\nname = "child"\n[train]\nlr = 0.01\n')
    loaded = load_suite(child)
    assert (loaded.name, loaded.models, loaded.settings.train.epochs, loaded.settings.train.lr) == (
        "child",
        ["meanp"],
        1,
        0.01,
    )


def test_a_child_suite_adds_rows_and_tables_to_its_bases_by_name(tmp_path):
    """``base = "ablation"`` plus a row and a table: the base's variant rows and tables stay, an
    entry with a base entry's name replaces it in place, the others are added."""
    path = tmp_path / "mine.toml"
    path.write_text(
        'base = "ablation"\n'
        '[[rows]]\nname = "mine"\nmodel = "tdb"\nset = { "train.backbone" = "finetune" }\n'
        '[[rows]]\nname = "tdb-mlp"\nmodel = "tdb"\nset = { "model.tdb_proj" = "none" }\n'
        '[[tables]]\nname = "mine"\nrows = ["meanp", "mine"]\n'
    )
    base, mine = load_suite("ablation").settings, load_suite(path).settings
    assert [r.name for r in mine.rows] == [r.name for r in base.rows] + ["mine"]
    assert mine.for_row(next(r for r in mine.rows if r.name == "tdb-mlp")).model.tdb_proj == "none"
    assert [t.name for t in mine.tables] == [t.name for t in base.tables] + ["mine"]
    assert mine.for_row(mine.rows[-1]).train.backbone == "finetune"


def test_models_on_the_command_line_fit_the_declared_tables(tmp_path):
    """``--models`` keeps the variant rows of the chosen models; a table keeps the rows that run and
    is left out (with a warning naming it) when its reference or all but one of its rows do not."""
    with pytest.warns(UserWarning) as caught:
        suite = load_suite("ablation", {"models": ["meanp", "tdb"]})
    settings = suite.settings
    assert [r.name for r in settings.rows] == ["tdb-mlp", "tdb-none"]
    tables = {t.name: t for t in settings.tables}
    assert set(tables) == {"components", "tdb-projection"}
    assert tables["components"].rows == ("meanp", "tdb") and tables["components"].compare == ()
    text = " | ".join(str(w.message) for w in caught)
    assert "table 'components' without its row(s) tab, clip2video" in text
    assert "table 'centers' left out" in text and "table 'weights' left out" in text
    assert (
        load_suite("ablation").settings.tables == load_suite("ablation", {}).settings.tables
    )  # no --models: as declared


def test_base_errors_name_the_file(tmp_path):
    loop = tmp_path / "loop.toml"
    loop.write_text('base = "loop.toml"\n')
    with pytest.raises(SuiteError, match="inherits from itself"):
        load_suite(loop)
    missing = tmp_path / "m.toml"
    missing.write_text('base = "nope"\n')
    with pytest.raises(SuiteError, match=r"m\.toml: base: Unknown suite 'nope'"):
        load_suite(missing)


# ----------------------------------------------------------------------------- [[rows]] and [[tables]]

ROWS = """
base = "smoke"
models = ["meanp", "tdb", "clip2video"]

[[rows]]
name = "clip2video-K3"
model = "clip2video"
set = { "model.center_k" = 3 }

[[rows]]
name = "tdb-mlp"
model = "tdb"
set = { model = { tdb_proj = "mlp" }, "train.lr" = 0.002 }

[[tables]]
name = "components"
title = "Does each temporal block help?"
rows = ["meanp", "tdb", "clip2video"]
reference = "meanp"
compare = [["clip2video", "tdb"]]

[[tables]]
name = "weights"
kind = "weights"
row = "clip2video"
weights = [0.0, 0.25, 0.5, 0.75, 1.0]
reference = 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rows.toml"
    path.write_text(text)
    return path


def test_variant_rows_resolve_like_set(tmp_path):
    suite = load_suite(write(tmp_path, ROWS))
    assert [r.name for r in suite.rows] == ["meanp", "tdb", "clip2video", "clip2video-K3", "tdb-mlp"]
    k3 = suite.row_settings(suite.rows[3])
    assert k3 == load_suite("smoke", {"model": {"center_k": 3}}).settings.replace(
        name=suite.settings.name,
        models=suite.settings.models,
        rows=suite.settings.rows,
        tables=suite.settings.tables,
    )
    mlp = suite.row_settings(suite.rows[4])
    assert (mlp.model.tdb_proj, mlp.train.lr, mlp.model.center_k) == (
        "mlp",
        0.002,
        suite.settings.model.center_k,
    )
    assert suite.row_settings(suite.rows[0]) is suite.settings  # a plain row: the suite's own
    plain = suite.settings.to_dict()
    assert plain["rows"][0] == {"name": "clip2video-K3", "model": "clip2video", "set": {"model.center_k": 3}}
    assert [t["name"] for t in plain["tables"]] == ["components", "weights"]
    assert suite.settings.tables[1].reference == 0.5 and suite.settings.tables[0].compare == (
        ("clip2video", "tdb"),
    )


def test_a_suite_may_have_only_variant_rows(tmp_path):
    path = write(
        tmp_path,
        'base = "smoke"\nmodels = []\n[[rows]]\nname = "k3"\nmodel = "tab"\nset = {"model.center_k" = 3}\n',
    )
    assert [r.name for r in load_suite(path).rows] == ["k3"]
    empty = write(tmp_path, 'base = "smoke"\nmodels = []\n')
    with pytest.raises(SuiteError, match=r"'models' \(or \[\[rows\]\]\) must name at least one model"):
        load_suite(empty)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            'name = "x"\nmodel = "tdb"\nset = {"model.center_kk" = 3}',
            r"rows\['x'\]\.set: unknown setting 'model\.center_kk'",
        ),
        ('name = "x"\nmodel = "tdb"\nset = {"model.center_k" = "three"}', r"'model\.center_k' must be int"),
        ('name = "x"\nmodel = "tdb"\nset = {"train.lr" = nan}', r"train\.lr = nan is not a finite number"),
        ('name = "x"\nmodel = "tdb"\nset = {"train.warmup" = 1.0}', r"train\.warmup = 1\.0 is out of range"),
        ('name = "x"\nmodel = "tdb"\nset = {"data.videos" = "v"}', r"'data' is shared by every row"),
        (
            'name = "x"\nmodel = "tdb"\nset = {"model.tdb_proj" = "conv"}',
            r"model\.tdb_proj = 'conv': choose one of",
        ),
        ('name = "x"\nmodel = "nope"', r"rows\['x'\]\.model: Unknown model 'nope'"),
        ('name = "../x"\nmodel = "tdb"', r"row name '\.\./x' cannot name a folder"),
        ('name = "a+b"\nmodel = "tdb"', r"may not hold '\+'"),
        ('name = "tdb"\nmodel = "tab"', r"the name 'tdb' is already taken by another row"),
        ('name = "x"\nmodel = "tdb"\ncolour = 1', r"unknown key 'colour'"),
    ],
)
def test_a_bad_variant_row_is_named(tmp_path, row, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(write(tmp_path, f'base = "smoke"\nmodels = ["tdb"]\n[[rows]]\n{row}\n'))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "t"\nrows = ["meanp", "nope"]', r"tables\['t'\]: 'nope' is not a row of the suite"),
        ('name = "t"\nrows = ["meanp"]\nreference = "tdb"', r"reference 'tdb' is not one of its rows"),
        (
            'name = "t"\nrows = ["meanp", "tdb"]\ncompare = [["tdb", "tab"]]',
            r"compare: 'tab' is not one of the table's rows",
        ),
        ('name = "t/x"\nrows = ["meanp"]', r"table name 't/x' cannot name a folder"),
        (
            'name = "t"\nkind = "weights"\nrow = "tdb"\nweights = [0.5, 2.0]',
            r"weights: 2\.0 is not a number in \[0, 1\]",
        ),
        (
            'name = "t"\nkind = "weights"\nrow = "tdb"\nweights = [0.5]\nreference = 0.25',
            r"reference 0\.25 is not one of its weights",
        ),
        (
            'name = "t"\nkind = "weights"\nrow = "tdb"\nrows = ["tdb"]\nweights = [0.5]',
            r"unknown key 'rows' for a 'weights' table",
        ),
        ('name = "t"\nkind = "pie"', r"kind = 'pie': choose one of rows, weights"),
    ],
)
def test_a_bad_table_is_named(tmp_path, table, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(write(tmp_path, f'base = "smoke"\nmodels = ["meanp", "tdb"]\n[[tables]]\n{table}\n'))


def test_table_names_are_unique(tmp_path):
    text = 'base = "smoke"\nmodels = ["meanp"]\n[[tables]]\nname = "t"\nrows = ["meanp"]\n[[tables]]\nname = "t"\nrows = ["meanp"]\n'
    with pytest.raises(SuiteError, match="the name 't' is used twice"):
        load_suite(write(tmp_path, text))


def test_a_weights_table_needs_a_tab_row_checked_before_work(tmp_path, capsys):
    text = 'base = "smoke"\nmodels = ["tdb"]\n[[tables]]\nname = "w"\nkind = "weights"\nrow = "tdb"\nweights = [0.5]\n'
    err = cli_error(capsys, tmp_path, "ablation", "--suite", str(write(tmp_path, text)))
    assert "a weights table reweights row 'tdb', but its model 'tdb' has one similarity part (no TAB)" in err


def test_set_cannot_declare_rows_or_tables():
    with pytest.raises(SuiteError, match="'rows' is declared in the suite file"):
        load_suite("smoke", {"rows": []})
