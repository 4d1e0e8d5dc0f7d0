"""One table per question: rows grouped by row name, Holm within a table, MDE per comparison and
table, extra compare pairs, platform footnotes, and the w table from stored similarity parts."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import torch

from clip2video.data.order import twin_order_accuracy, twin_order_wins
from clip2video.engine.embeddings import Embeddings
from clip2video.engine.records import (
    read_suite_info,
    read_suite_records,
    write_run_record,
    write_suite_info,
)
from clip2video.engine.scoring import evaluate_embeddings, similarity_part_matrices
from clip2video.metrics import metrics_from_ranks
from clip2video.metrics.bootstrap import holm, minimum_detectable_difference, paired_difference
from clip2video.report.groups import group_records, summarise
from clip2video.report.platforms import describe_platform, platform_note
from clip2video.report.questions import table_specs
from clip2video.report.results import build_question_tables, regenerate
from clip2video.report.tables import TableError, build_suite_table
from clip2video.report.tables import regenerate as regenerate_tables
from clip2video.report.weights import combine_parts, weight_row
from clip2video.settings import SettingsError, table_decl
from tests.support.question_records import COMPONENTS, N_BOOT, OTHER, PLATFORM, PROJECTION, hand_suite
from tests.support.tiny_clip import tiny_model, tiny_text, tiny_video
from tests.test_tables import LOG_PROBLEMS, compile_paper, needs_pdflatex


def suite_tables(runs, suite="q", tables=None):
    records = read_suite_records(runs, suite)
    info = read_suite_info(runs, suite)
    table = build_suite_table(records, info, pd.DataFrame(columns=["protocol", "model"]))
    return table, build_question_tables(table, info, tables=tables)


def test_rows_group_by_row_name_and_each_table_holds_its_rows(tmp_path):
    hand_suite(tmp_path, tables=[COMPONENTS, PROJECTION])
    table, questions = suite_tables(tmp_path)
    assert [g.label for g in table.groups] == [
        "meanp",
        "tdb",
        "tdb-mlp",
        "clip2video",
    ]  # tdb-mlp is its own row
    assert all(len(g.records) == 3 for g in table.groups)
    components, projection = questions
    assert list(components.main.index) == ["meanp", "tdb", "clip2video"]
    assert list(projection.main.index) == ["tdb", "tdb-mlp"]
    assert components.main.loc["meanp", "note"] == "reference"
    # the same summaries as the all-rows table: identical cells
    for column in ("t2v R@5", "v2t MnR", "order acc"):  # marks aside (each table is its own Holm family)
        assert components.main.loc["clip2video", column].rstrip("*") == table.main.loc[
            "clip2video", column
        ].rstrip("*")
    # order accuracy on every row that recorded it
    assert components.main["order acc"].str.startswith(("51.0 ", "53.0 ", "57.0 ")).all()


def test_comparisons_holm_within_the_table_and_mde(tmp_path):
    hand_suite(tmp_path, tables=[COMPONENTS, PROJECTION])
    table, (components, projection) = suite_tables(tmp_path)
    groups = {g.label: g for g in table.groups}
    assert [c.key for c in components.comparisons] == ["tdb", "clip2video", "clip2video - tdb"]
    assert [(c.row, c.against) for c in components.comparisons] == [
        ("tdb", "meanp"), ("clip2video", "meanp"), ("clip2video", "tdb")
    ]  # fmt: skip
    extra = components.comparisons[2]
    expected = paired_difference(groups["clip2video"].summary, groups["tdb"].summary)
    assert extra.diffs["t2v_R1"] == expected["t2v_R1"]  # the extra pair, paired over the same resamples
    # Holm's family is exactly this table's comparisons (3 comparisons x every column + order acc)
    family = [(c, k) for c in components.comparisons for k in c.diffs]
    adjusted = holm([c.diffs[k].p for c, k in family])
    assert [c.adjusted[k] for c, k in family] == pytest.approx(list(adjusted), nan_ok=True)
    assert len(family) == 3 * 11
    assert projection.comparisons[0].adjusted["t2v_R1"] == pytest.approx(
        holm([projection.comparisons[0].diffs[k].p for k in projection.comparisons[0].diffs])[0]
    )  # the other table is its own family
    assert components.comparisons[1].significant("t2v_R1")  # clip2video is much better than meanp
    assert components.main.loc["clip2video", "t2v R@1"].endswith("*")
    # MDE: per comparison from its own paired standard error; the table's = the largest
    mdes = [minimum_detectable_difference(c.diffs["t2v_R1"].se) for c in components.comparisons]
    assert [c.mde("t2v_R1") for c in components.comparisons] == mdes
    assert components.mde() == max(mdes)
    notes = " ".join(components.footnotes)
    assert f"of this table: {max(mdes):.1f} points" in notes
    assert f"({3 * 11} tests" in notes
    sig = components.significance
    assert list(sig.index) == ["tdb - meanp", "clip2video - meanp", "clip2video - tdb"]
    assert sig.loc["clip2video - tdb", "MDE t2v R@1"] == f"{mdes[2]:.1f}"
    values = components.values
    line = values[(values.line == "comparison") & (values.row == "clip2video") & (values.against == "tdb")]
    assert line.set_index("metric").loc["t2v_R1", "mde"] == pytest.approx(mdes[2])


def test_declared_tables_are_read_from_suite_json_and_checked(tmp_path):
    hand_suite(tmp_path, tables=[COMPONENTS])
    info = read_suite_info(tmp_path, "q")
    assert [s.name for s in table_specs(info)] == ["components"]
    assert table_specs(info)[0].compare == (("clip2video", "tdb"),)
    assert table_specs(info, []) == []  # an explicit list overrides suite.json
    with pytest.raises(SettingsError, match="'nosuch' is not one of the table's rows"):
        table_decl({"name": "x", "rows": ["meanp"], "compare": [["meanp", "nosuch"]]}, 0, "tables")
    with pytest.raises(SettingsError, match="table name 'table' is taken"):
        table_decl({"name": "table", "rows": ["meanp"]}, 0, "tables")
    with pytest.raises(TableError, match="used twice"):
        table_specs(info, [COMPONENTS, COMPONENTS])
    # a partial run (e.g. --models): the recorded rows, and a note naming the others
    _, (partial,) = suite_tables(
        tmp_path, tables=[{"name": "c", "rows": ["meanp", "tab", "tdb"], "compare": [["tab", "tdb"]]}]
    )
    assert list(partial.main.index) == ["meanp", "tdb"] and [c.key for c in partial.comparisons] == ["tdb"]
    assert any(
        n.startswith("Rows of this table the run did not record") and "tab;" in n for n in partial.footnotes
    )
    assert (
        suite_tables(tmp_path, tables=[{"name": "c", "rows": ["tab"]}])[1] == []
    )  # nothing recorded: no table


def test_files_per_table_and_unchanged_all_rows_table(tmp_path):
    hand_suite(tmp_path / "runs", tables=[COMPONENTS])
    written = regenerate(tmp_path / "runs", tmp_path / "out", ["q"], plots=False)["q"]
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["table.md", "table.tex", "table.csv", "values.csv", "result.json", "components.md",
         "components.tex", "components.csv"]
    )  # fmt: skip
    md = (tmp_path / "out" / "q" / "components.md").read_text()
    assert md.startswith("# Does each temporal block help?")
    tex = (tmp_path / "out" / "q" / "components.tex").read_text()
    assert r"\caption{Does each temporal block help?: text-to-video retrieval on the" in tex
    # a suite without [[tables]]: the all-rows files are exactly report.tables'
    hand_suite(tmp_path / "runs2", tables=None)
    regenerate(tmp_path / "runs2", tmp_path / "a", ["q"], plots=False)
    regenerate_tables(tmp_path / "runs2", tmp_path / "b", ["q"], plots=False)
    for name in ("table.md", "table.tex", "table.csv", "values.csv"):
        assert (tmp_path / "a" / "q" / name).read_bytes() == (tmp_path / "b" / "q" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / "q").iterdir()) == sorted(
        ["table.md", "table.tex", "table.csv", "values.csv", "result.json"]
    )


def test_platform_footnotes_name_every_platform(tmp_path):
    hand_suite(tmp_path, tables=[COMPONENTS], platforms={"clip2video": OTHER})
    table, (components,) = suite_tables(tmp_path)
    same = [g for g in table.groups if g.label != "clip2video"]
    assert platform_note(same) == "Platform: Test CPU, CPU kernels AVX512, 2 threads, torch 9.9 (every row)."
    mixed = "Platforms differ between rows: Test CPU, CPU kernels AVX512, 2 threads, torch 9.9: meanp, tdb"
    assert any(n.startswith(mixed) and n.endswith("Other CPU, CPU kernels AVX2, 2 threads, torch 9.9: clip2video.")
               for n in components.footnotes)  # fmt: skip
    assert any(
        n.startswith("Platforms differ between rows:") for n in table.footnotes
    )  # the all-rows table too
    # a row whose seeds ran on different platforms is named per seed
    groups = summarise(group_records(read_suite_records(tmp_path, "q")), n_boot=N_BOOT)
    g = groups[0]
    g.records[2] = dataclasses.replace(g.records[2], fingerprint={"platform": OTHER})
    assert "meanp (seed 2)" in platform_note([g]) and "meanp (seed 0), meanp (seed 1)" in platform_note([g])
    assert describe_platform(None) == "platform not recorded"
    assert describe_platform({**PLATFORM, "threads": 1, "device": "cuda:0", "cuda_device": "H100"}).endswith(
        "1 thread, torch 9.9, device cuda:0 (H100)"
    )


# ----------------------------------------------------------------------------------------------
# The w table
# ----------------------------------------------------------------------------------------------

TWINS = np.array([1, 0, 3, 2, -1, -1, 7, 6, -1, -1])  # video i's time-reversed twin (-1: none)


def order_hook(sim, caption_video):
    """A protocol's extra_metrics hook bound to its twins (as the synthetic protocol's is)."""
    return {
        **twin_order_accuracy(sim, caption_video, TWINS),
        "arrays": {"order_wins": twin_order_wins(sim, caption_video, TWINS)},
    }


def tab_suite(runs, suite="w", seeds=(0, 1), chunk=7, perturb=False):
    """clip2video rows of a tiny real model, evaluated through the engine (several similarity chunks),
    recorded with the similarity parts as the row runner records them; plus meanp-like rows.
    ``perturb``: record parts that are not the ones the sim was made from."""
    names = []
    m, per_video = len(TWINS), 2
    for seed in seeds:
        model = tiny_model("clip2video", seed=seed, temporal_layers=1, center_k=3)
        frames, mask = tiny_video(m, frames=4, seed=seed)
        ids, id_mask = tiny_text(m * per_video, seed=seed)
        with torch.no_grad():
            emb = Embeddings(
                text=model.encode_text(ids, id_mask),
                video=model.encode_video(frames, mask),
                caption_video=np.repeat(np.arange(m), per_video),
                video_ids=[f"v{i}" for i in range(m)],
            )
        result = evaluate_embeddings(model, emb, tie_policy="mean", keep_sim=True, chunk_size=chunk)
        sim = result.sim.float().numpy()
        parts = {k: v.numpy() for k, v in similarity_part_matrices(model, emb, chunk_size=chunk).items()}
        if perturb:
            parts["global"] = parts["global"].copy()
            parts["global"][0, 0] += np.float32(1e-3)
        found = order_hook(sim, emb.caption_video)
        name = f"clip2video-s{seed}"
        write_run_record(
            runs / suite / name,
            name=name,
            metrics=result.metrics,
            ranks=result.ranks,
            caption_video=emb.caption_video,
            protocol="synthetic",
            config={"model": {"center_weight": 0.5}, "eval": {"bootstrap": N_BOOT, "recall_ks": [1, 5, 10]}},
            extra={"row": "clip2video", "model": "clip2video", "seed": seed, "order_acc": found["order_acc"]},
            sim=sim,
            sim_parts=parts,
            arrays=found["arrays"],
            fingerprint={"platform": PLATFORM},
        )
        names.append(name)
    write_suite_info(runs, suite, protocol="synthetic", rows=names)
    return read_suite_records(runs, suite)


WEIGHTS = {
    "name": "weights",
    "kind": "weights",
    "row": "clip2video",
    "weights": [0.0, 0.5, 1.0],
    "reference": 0.5,
}


def test_w_table_at_the_trained_weight_is_the_trained_row_exactly(tmp_path):
    records = tab_suite(tmp_path)
    info = read_suite_info(tmp_path, "w")
    table = build_suite_table(records, info, pd.DataFrame(columns=["protocol", "model"]))
    (weights,) = build_question_tables(table, info, tables=[WEIGHTS], order_hook=order_hook)
    by_row = {g.label: g for g in weights.groups}
    assert list(by_row) == ["w=0", "w=0.5", "w=1"]
    trained = next(g for g in table.groups if g.label == "clip2video")
    for made, rec in zip(by_row["w=0.5"].records, trained.records, strict=True):
        for field in dataclasses.fields(rec.ranks):  # every rank array and flag, bit for bit
            a, b = getattr(made.ranks, field.name), getattr(rec.ranks, field.name)
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, field.name
        assert made.metrics == rec.metrics  # exactly, every key
        assert metrics_from_ranks(made.ranks) == rec.metrics
        assert np.array_equal(made.arrays["order_wins"], rec.arrays["order_wins"], equal_nan=True)
        assert made.extra["order_acc"] == rec.extra["order_acc"]
        assert np.array_equal(combine_parts(*(rec.load_sim_parts()[p] for p in ("global", "aligned")), 0.5).numpy(),
                              rec.load_sim())  # fmt: skip
    # the same summary, so the same cells as the trained row in the all-rows table
    row = weights.main.loc["w=0.5"]
    for column in ("t2v R@1", "v2t R@5", "t2v MnR", "order acc"):
        assert row[column].rstrip("*") == table.main.loc["clip2video", column].rstrip("*")
    # other weights rank differently
    for w in ("w=0", "w=1"):
        differ = [
            not np.array_equal(m.ranks.t2v, r.ranks.t2v) or m.metrics != r.metrics
            for m, r in zip(by_row[w].records, trained.records, strict=True)
        ]
        assert all(differ), w
    assert [c.key for c in weights.comparisons] == ["w=0", "w=1"]
    assert all(c.against == weight_row(0.5) for c in weights.comparisons)
    notes = " ".join(weights.footnotes)
    assert "bit for bit" in notes and "order wins equal the recorded ones" in notes
    assert "Platform: Test CPU" in notes


def test_w_table_refuses_parts_that_do_not_make_the_recorded_sim(tmp_path):
    tab_suite(tmp_path, seeds=(0,), perturb=True)  # parts that are not the ones the sim was made from
    folder = tmp_path / "w" / "clip2video-s0"
    records = read_suite_records(tmp_path, "w")
    table = build_suite_table(records, None, pd.DataFrame(columns=["protocol", "model"]))
    with pytest.raises(TableError, match="bit for bit"):
        build_question_tables(table, None, tables=[WEIGHTS])
    # a row recorded without parts: the table says which file and what to do
    write_run_record(folder, name="clip2video-s0", metrics={}, ranks_t2v=[1.0, 2.0], ranks_v2t=[1.0, 2.0],
                     sim=np.eye(2), extra={"row": "clip2video", "seed": 0})  # fmt: skip
    write_suite_info(tmp_path, "w", protocol="synthetic", rows=["clip2video-s0"])  # the rewritten row's run
    records = read_suite_records(tmp_path, "w")
    table = build_suite_table(records, None, pd.DataFrame(columns=["protocol", "model"]))
    with pytest.raises(TableError, match="no sim_global/sim_aligned.*rerun the row"):
        build_question_tables(table, None, tables=[WEIGHTS])


def test_w_table_without_annotations_says_why_order_is_missing(tmp_path):
    records = tab_suite(tmp_path, seeds=(0,))
    regenerate(
        tmp_path, tmp_path / "out", ["w"], plots=False, tables=[WEIGHTS], data_root=tmp_path / "nodata"
    )
    md = (tmp_path / "out" / "w" / "weights.md").read_text()
    assert "order acc: not recomputed: the test split's annotations were not found" in md
    values = pd.read_csv(tmp_path / "out" / "w" / "weights.csv")
    mean = values[(values.line == "mean") & (values.metric == "t2v_R1")].set_index("row")["value"]
    assert mean["w=0.5"] == records[0].metrics["t2v_R1"]
    assert "Platform: Test CPU, CPU kernels AVX512, 2 threads, torch 9.9 (every row)." in md


@pytest.mark.slow
def test_a_real_run_records_the_parts_and_its_w_table_finds_the_twins(tmp_path, smoke_reference):
    """The runner's clip2video record keeps sim_global/sim_aligned; the w table made from them (order
    accuracy through the synthetic protocol's hook, on the annotations found by their hashes) has the
    trained row at w = 0.5."""
    rec = next(r for r in read_suite_records(smoke_reference.runs, "smoke") if r.model == "clip2video")
    assert sorted(rec.load_sim_parts()) == ["aligned", "global"]
    meanp = next(r for r in read_suite_records(smoke_reference.runs, "smoke") if r.model == "meanp")
    assert meanp.load_sim_parts() == {}  # one similarity part: nothing extra stored
    regenerate(
        smoke_reference.runs,
        tmp_path,
        ["smoke"],
        plots=False,
        tables=[WEIGHTS],
        data_root=smoke_reference.data_root,
    )
    values = pd.read_csv(tmp_path / "smoke" / "weights.csv")
    mean = values[values.line == "mean"].set_index(["row", "metric"])["value"]
    assert mean["w=0.5", "t2v_R1"] == rec.metrics["t2v_R1"]
    assert mean["w=0.5", "order_acc"] == rec.extra["order_acc"]
    assert "order wins equal the recorded ones (checked)" in (tmp_path / "smoke" / "weights.md").read_text()


@needs_pdflatex
@pytest.mark.slow
def test_question_tables_drop_into_a_two_column_paper(tmp_path):
    """Each declared table's .tex beside the all-rows table.tex, \\input into a two-column article:
    it compiles with no overfull box, no float too large or lost, and one label per float."""
    hand_suite(tmp_path / "runs", tables=[COMPONENTS, PROJECTION])
    regenerate(tmp_path / "runs", tmp_path / "out", ["q"], plots=False)
    inputs = [tmp_path / "out" / "q" / f"{name}.tex" for name in ("table", "components", "projection")]
    log, pdf = compile_paper(tmp_path / "paper", inputs, twocolumn=True)
    assert pdf.stat().st_size > 1000
    assert not LOG_PROBLEMS.findall(log), LOG_PROBLEMS.findall(log)
    tex = inputs[1].read_text()
    labels = re.findall(r"\\label\{([^}]+)\}", tex)
    assert len(labels) == tex.count("\\begin{\\ClipVideoTableEnv}") == 6 and len(set(labels)) == 6
    assert all(label.startswith("tab:q-components-") for label in labels)
    captions = re.findall(r"\\caption\{(.*)\}\\label", tex)
    assert captions[0].startswith("Does each temporal block help?: text-to-video retrieval")
    assert "Minimum detectable t2v R@1 difference" in tex.split("\\end{\\ClipVideoTableEnv}")[0]
