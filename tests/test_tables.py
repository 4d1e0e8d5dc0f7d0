"""Tables from run records: paper layout, intervals, published rows, significance, marked blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clip2video.cli import main as cli_main
from clip2video.engine.records import (
    RecordError,
    read_suite_info,
    read_suite_records,
    write_run_record,
    write_suite_info,
)
from clip2video.report.stats import bootstrap_ci
from clip2video.report.tables import (
    NO_PUBLISHED,
    PAPER_DIR,
    TableError,
    build_suite_table,
    load_published,
    regenerate,
)


def hand_metrics(t2v: np.ndarray, v2t: np.ndarray) -> dict[str, float]:
    """Metrics written out by hand (independent of the code under test)."""
    out = {}
    for d, r in (("t2v", t2v), ("v2t", v2t)):
        out.update(
            {
                f"{d}_R1": 100 * np.mean(r <= 1),
                f"{d}_R5": 100 * np.mean(r <= 5),
                f"{d}_R10": 100 * np.mean(r <= 10),
                f"{d}_MdR": float(np.median(r)),
                f"{d}_MnR": float(np.mean(r)),
            }
        )
    out["t2v_ties"], out["v2t_ties"] = 0.0, 0.0
    return out


def make_suite(runs, suite="demo", protocol="synthetic", n=300, extra_rows=()):
    """meanp (baseline), same (= meanp's ranks), better (ranks shifted up), plus ``extra_rows``."""
    rng = np.random.default_rng(0)
    base_t, base_v = rng.integers(1, 40, n).astype(float), rng.integers(1, 40, n).astype(float)
    rows = {
        "meanp": (base_t, base_v, {}),
        "same": (base_t.copy(), base_v.copy(), {}),
        "better": (np.maximum(1, base_t - 8), np.maximum(1, base_v - 8), {"order_acc": 71.5}),
    }
    rows.update({name: (base_t, base_v, extra) for name, extra in extra_rows})
    for name, (t, v, extra) in rows.items():
        write_run_record(
            runs / suite / name,
            name=name,
            metrics=hand_metrics(t, v),
            ranks_t2v=t,
            ranks_v2t=v,
            protocol=protocol,
            config={"eval": {"bootstrap": 200}},
            extra={"model": extra.pop("model", name), **extra},
            sim=np.zeros((2, 2)) if name == "meanp" else None,
        )
    write_suite_info(
        runs, suite, protocol=protocol, rows=list(rows), notes=["meanp ceiling: 50% by construction"]
    )
    return rows


def test_records_round_trip_and_order(tmp_path):
    rows = make_suite(tmp_path)
    records = read_suite_records(tmp_path, "demo")
    assert [r.name for r in records] == list(rows)
    assert records[2].extra["order_acc"] == 71.5
    np.testing.assert_array_equal(records[0].ranks_t2v, rows["meanp"][0])
    assert records[0].ranks_t2v.dtype == np.float64
    assert records[0].load_sim().shape == (2, 2)
    assert read_suite_info(tmp_path, "demo").notes == ["meanp ceiling: 50% by construction"]
    with pytest.raises(RecordError, match="nosuch"):
        read_suite_records(tmp_path, "nosuch")


def test_record_from_query_ranks_object(tmp_path):
    from types import SimpleNamespace

    qr = SimpleNamespace(
        t2v=np.array([1.0, 2.5]),
        v2t=np.array([3.0, 1.0]),
        t2v_tied=np.array([False, True]),
        v2t_tied=np.array([False, False]),
        tie_policy="mean",
    )
    write_run_record(tmp_path / "s" / "m", name="m", metrics={"t2v_R1": 50.0}, ranks=qr, protocol="msvd")
    (rec,) = read_suite_records(tmp_path, "s")
    assert rec.tie_policy == "mean" and rec.protocol == "msvd"
    np.testing.assert_array_equal(rec.ranks_t2v, [1.0, 2.5])
    np.testing.assert_array_equal(rec.tied_t2v, [False, True])
    with pytest.raises(RecordError, match="ranks"):
        write_run_record(tmp_path / "x", name="x", metrics={})
    with pytest.raises(RecordError, match="row name"):
        write_run_record(tmp_path / "y", name="../y", metrics={}, ranks=qr)


def test_paper_layout_cells_and_intervals(tmp_path):
    make_suite(tmp_path)
    records = read_suite_records(tmp_path, "demo")
    table = build_suite_table(records, read_suite_info(tmp_path, "demo"), load_published())
    expected_cols = [f"{d} {m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]
    assert list(table.main.columns[:10]) == expected_cols
    assert list(table.main.index) == ["meanp", "same", "better"]
    lo, hi = bootstrap_ci(records[0].ranks_t2v, records[0].ranks_v2t, n_boot=200)["t2v_R1"]
    r1 = 100 * np.mean(records[0].ranks_t2v <= 1)
    assert table.main.loc["meanp", "t2v R@1"] == f"{r1:.1f} [{lo:.1f}, {hi:.1f}]"
    assert (table.main["note"] == NO_PUBLISHED).all()
    assert any("could not be obtained" in f for f in table.footnotes)
    assert "meanp ceiling: 50% by construction" in table.footnotes
    assert table.main.loc["better", "order acc"] == "71.5"


def test_significance_marks_a_real_shift_only(tmp_path):
    make_suite(tmp_path)
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    assert table.main.loc["better", "t2v R@1"].endswith("*")
    assert table.main.loc["better", "v2t MnR"].endswith("*")
    assert not any(str(c).endswith("*") for c in table.main.loc["same"])
    assert not any(str(c).endswith("*") for c in table.main.loc["meanp"])
    assert list(table.significance.index) == ["same", "better"]
    assert table.significance.loc["same", "t2v R@1"].startswith("+0.0 [+0.0, +0.0] p=1.000")
    vals = table.values[(table.values.row == "better") & (table.values.metric == "t2v_MnR")].iloc[0]
    rows = make_suite(tmp_path / "again")
    assert vals["delta_vs_meanp"] == pytest.approx(np.mean(rows["better"][0]) - np.mean(rows["meanp"][0]))


def test_published_row_beside_reproduced_with_difference(tmp_path):
    make_suite(tmp_path, protocol="msrvtt-1k-a", extra_rows=[("clip2video", {})])
    records = read_suite_records(tmp_path, "demo")
    table = build_suite_table(records, published=load_published())
    idx = list(table.main.index)
    at = idx.index("clip2video")
    assert idx[at + 1 : at + 3] == ["clip2video (published)", "clip2video (ours - published)"]
    assert table.main.loc["clip2video (published)", "t2v R@1"] == "45.6"
    assert table.main.loc["clip2video (published)", "v2t MnR"] == "10.2"
    ours = 100 * np.mean(records[-1].ranks_t2v <= 1)
    assert table.main.loc["clip2video (ours - published)", "t2v R@1"] == f"{ours - 45.6:+.1f}"
    assert table.main.loc["meanp", "note"] == NO_PUBLISHED


def test_legacy_value_beside_published_and_footnote(tmp_path):
    legacy = {"t2v_R1": 45.0, "v2t_R1": 44.0}
    make_suite(tmp_path, protocol="msrvtt-1k-a", extra_rows=[("clip2video", {"legacy": legacy})])
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    assert table.main.loc["clip2video (legacy ties)", "t2v R@1"] == "45.0"
    assert table.main.loc["clip2video (legacy - published)", "t2v R@1"] == "-0.6"
    assert table.main.loc["clip2video (legacy - published)", "v2t R@1"] == "+0.5"
    assert any("differ from `legacy`" in f and "t2v_R1" in f for f in table.footnotes)


def test_postprocessed_rows_are_a_separate_marked_block(tmp_path):
    make_suite(tmp_path, extra_rows=[("meanp-dsl", {"postprocess": "dsl", "model": "meanp"})])
    table = build_suite_table(read_suite_records(tmp_path, "demo"), published=load_published())
    assert "meanp-dsl ‡" not in table.main.index
    assert list(table.postprocessed.index) == ["meanp-dsl ‡"]
    assert "meanp-dsl" not in table.significance.index
    assert any(f.startswith("‡") for f in table.footnotes)


def test_published_csv_holds_the_spec_numbers():
    pub = load_published(PAPER_DIR).set_index("protocol")
    assert set(pub.index) == {"msvd", "msrvtt-1k-a", "msrvtt-full", "vatex-1k5", "vatex-hgr"}
    assert pub.loc["msrvtt-full", "t2v_MnR"] == 45.5 and "45.4" in pub.loc["msrvtt-full", "note"]
    assert "released later, not in the paper" in pub.loc["vatex-hgr", "note"]
    assert pub.loc["vatex-1k5", "v2t_R10"] == 99.9 and pub.loc["msvd", "t2v_MnR"] == 9.6


def test_bad_published_csv_names_the_file(tmp_path):
    (tmp_path / "mine.csv").write_text("protocol,model,t2v_R@1\nmsvd,x,1\n")
    with pytest.raises(TableError, match=r"mine\.csv.*t2v_R@1"):
        load_published(tmp_path)


def test_cli_tables_writes_md_tex_csv(tmp_path):
    make_suite(tmp_path / "runs")
    out = tmp_path / "results"
    assert cli_main(["tables", "--runs", str(tmp_path / "runs"), "--out", str(out), "--no-plots"]) == 0
    md = (out / "demo" / "table.md").read_text()
    assert "| meanp" in md and "t2v R@1" in md and "Paired bootstrap" in md
    assert r"\begin{tabular}" in (out / "demo" / "table.tex").read_text()
    csv = pd.read_csv(out / "demo" / "table.csv", index_col=0)
    assert list(csv.index) == ["meanp", "same", "better"]
    assert not (out / "demo" / "recall_at_k.png").exists()


def test_regenerate_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(TableError, match="no recorded suites"):
        regenerate(tmp_path / "runs", tmp_path / "results")
