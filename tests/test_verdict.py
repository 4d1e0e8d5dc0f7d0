"""The reproduction verdict through `clip2video tables --reference`: the reference chosen by kernel
set, row means inside / outside the reference's intervals, and readings that hold, flip, are not
significant (or inconclusive, missing)."""

from __future__ import annotations

import json
import shutil

import pytest

from clip2video.cli import main as cli_main
from clip2video.report.verdict import (
    FLIPS,
    HOLDS,
    INCONCLUSIVE,
    MISSING,
    NOT_SIGNIFICANT,
    VerdictError,
    choose_reference,
    load_readings,
    suite_verdict,
    verdict_after_tables,
)
from tests.support.question_records import COMPONENTS, hand_suite

READINGS = """
[[readings]]
table = "components"
row = "clip2video"
vs = "meanp"
metric = "t2v_R1"
claim = "higher"
sentence = "The full model beats mean pooling."

[[readings]]
table = "components"
row = "tdb"
vs = "meanp"
metric = "t2v_R1"
claim = "higher"
sentence = "TDB alone beats mean pooling."

[[readings]]
table = "components"
row = "meanp"
vs = "clip2video"
metric = "v2t_R1"
claim = "lower"
sentence = "Mean pooling trails the full model on v2t (read from the comparison the other way round)."

[[readings]]
table = "table"
row = "tdb-mlp"
vs = "meanp"
metric = "t2v_R5"
claim = "higher"
sentence = "The MLP projection helps."

[[readings]]
table = "table"
row = "tdb-mlp"
vs = "meanp"
metric = "t2v_R1"
claim = "no-difference"
sentence = "The MLP projection changes nothing."

[[readings]]
table = "components"
row = "clip2video"
vs = "tdb-mlp"
metric = "t2v_R1"
claim = "higher"
sentence = "Not a comparison of the table."
"""


def tables(runs, results, *extra):
    return cli_main(["tables", "--suite", "q", "--runs-dir", str(runs), "--results-dir", str(results), "--no-plots",
                     *map(str, extra)])  # fmt: skip


@pytest.fixture
def reference(tmp_path):
    """reference/q from one run (tdb 4 ranks better than meanp, clip2video 6), with readings."""
    hand_suite(tmp_path / "runs-ref", tables=[COMPONENTS], shift={"tdb": 4})
    assert tables(tmp_path / "runs-ref", tmp_path / "reference") == 0
    (tmp_path / "reference" / "q" / "readings.toml").write_text(READINGS)
    (tmp_path / "reference" / "q" / "verdict.md").unlink(missing_ok=True)
    return tmp_path / "reference"


def test_verdict_through_the_cli(tmp_path, reference, capsys):
    # the user's run: tdb now trails meanp, clip2video is far better; meanp and tdb-mlp unchanged
    hand_suite(tmp_path / "runs", tables=[COMPONENTS], shift={"tdb": -4, "clip2video": 14})
    capsys.readouterr()
    assert (
        tables(
            tmp_path / "runs", tmp_path / "results", "--reference", reference, "--reference-kernels", "avx2"
        )
        == 0
    )
    out = capsys.readouterr().out
    verdict = suite_verdict(tmp_path / "results", "q", reference, kernels="avx2")
    assert verdict.reference_dir == reference / "q"
    assert "no q-avx2 reference" in verdict.reason  # avx2 asked, only the base reference exists
    status = {(o.reading.row, o.reading.vs, o.reading.metric, o.reading.claim): o for o in verdict.readings}
    held = status[("clip2video", "meanp", "t2v_R1", "higher")]
    assert (held.status, held.reference_status) == (HOLDS, HOLDS) and held.delta > 0
    flipped = status[("tdb", "meanp", "t2v_R1", "higher")]
    assert (flipped.status, flipped.reference_status) == (FLIPS, HOLDS) and flipped.delta < 0
    reversed_pair = status[("meanp", "clip2video", "v2t_R1", "lower")]
    assert reversed_pair.status == HOLDS and reversed_pair.delta < 0  # delta read as meanp minus clip2video
    assert status[("tdb-mlp", "meanp", "t2v_R5", "higher")].status == NOT_SIGNIFICANT
    same = status[("tdb-mlp", "meanp", "t2v_R1", "no-difference")]
    assert same.status == HOLDS and same.delta == 0.0 and same.mde > 0
    missing = status[("clip2video", "tdb-mlp", "t2v_R1", "higher")]
    assert (
        missing.status == MISSING
        and "its comparisons: clip2video - meanp, clip2video - tdb" in missing.detail
    )
    # means: the unchanged rows lie inside the reference's intervals; the moved ones outside
    cov = {(c.table, c.metric): c for c in verdict.coverage}
    t2v = cov[("components", "t2v_R1")]
    assert (t2v.inside, t2v.total) == (1, 3)
    assert sorted(o.row for o in t2v.outside) == ["clip2video", "tdb"]
    assert cov[("table", "t2v_R1")].total == 4 and cov[("table", "t2v_R1")].inside == 2
    assert verdict.total == sum(c.total for c in verdict.coverage) and verdict.inside < verdict.total
    assert not verdict.holds
    text = (tmp_path / "results" / "q" / "verdict.md").read_text()
    assert text == verdict.markdown() and verdict.terminal() in out  # printed: the compact form
    assert "  FLIPS            tdb vs meanp, t2v R@1 higher (components: delta -" in out
    assert "  outside: table tdb t2v R@1 0.0 (reference [" in out and "  ... and 34 more (verdict.md" in out
    assert "FLIPS: tdb vs meanp, t2v R@1 higher: \u201cTDB alone beats mean pooling.\u201d" in text
    assert "Run platform: Test CPU, CPU kernels AVX512, 2 threads, torch 9.9" in text
    assert f"{verdict.inside}/{verdict.total} row means inside" in out.splitlines()[-2]


def test_the_reference_is_chosen_by_kernel_set(tmp_path, reference):
    shutil.copytree(reference / "q", reference / "q-avx2")
    assert choose_reference("q", reference, kernels="avx2")[0] == reference / "q-avx2"
    assert choose_reference("q", reference, kernels="AVX512")[0] == reference / "q"
    assert choose_reference("q", reference / "q")[0] == reference / "q"  # a suite's folder itself
    monkeypatched = choose_reference("q", reference, kernels=None)[1]
    assert "detected" in monkeypatched
    # a run's verdict takes the kernel set its rows recorded (result.json), not this process's
    hand_suite(tmp_path / "runs", tables=[COMPONENTS])
    assert tables(tmp_path / "runs", tmp_path / "results") == 0
    result = tmp_path / "results" / "q" / "result.json"
    data = json.loads(result.read_text())
    for row in data["rows"]:
        row["fingerprint"]["platform"]["cpu_capability"] = "AVX2"
    result.write_text(json.dumps(data))
    recorded = suite_verdict(tmp_path / "results", "q", reference)
    assert recorded.reference_dir == reference / "q-avx2" and "avx2 (the run's records)" in recorded.reason
    with pytest.raises(VerdictError, match="holds no reference for suite 'nosuch'"):
        choose_reference("nosuch", reference)
    # readings of the avx2 folder fall back to the base folder's
    (reference / "q-avx2" / "readings.toml").unlink()
    hand_suite(tmp_path / "runs", tables=[COMPONENTS])
    assert tables(tmp_path / "runs", tmp_path / "results") == 0
    verdict = suite_verdict(tmp_path / "results", "q", reference, kernels="avx2")
    assert verdict.reference_dir == reference / "q-avx2" and len(verdict.readings) == 6


def test_same_run_is_inside_everywhere_and_no_difference_can_be_inconclusive(tmp_path, reference):
    hand_suite(tmp_path / "runs", tables=[COMPONENTS], shift={"tdb": 4})
    assert tables(tmp_path / "runs", tmp_path / "results") == 0
    verdict = suite_verdict(tmp_path / "results", "q", reference / "q")
    assert verdict.inside == verdict.total > 0
    assert "Same platform as the reference" in verdict.markdown()
    (reference / "q" / "readings.toml").write_text(
        '[[readings]]\ntable = "components"\nrow = "tdb"\nvs = "meanp"\nmetric = "t2v_MnR"\n'
        'claim = "no-difference"\nsentence = "s"\n'
    )
    (outcome,) = suite_verdict(tmp_path / "results", "q", reference / "q").readings
    assert outcome.status in (FLIPS, INCONCLUSIVE)  # tdb moved MnR by 4 ranks: no "no difference"


def test_reference_problems_fail_before_work(tmp_path, reference, capsys):
    hand_suite(tmp_path / "runs", tables=[COMPONENTS])
    assert tables(tmp_path / "runs", tmp_path / "results", "--reference", tmp_path / "nothere") != 0
    err = capsys.readouterr().err
    assert err.startswith("clip2video: error: reference folder") and "nothere" in err
    assert not (tmp_path / "results").exists()  # nothing written
    (reference / "q" / "readings.toml").write_text(
        '[[readings]]\ntable = "components"\nrow = "tdb"\nvs = "meanp"\nmetric = "t2v_R1"\nclaim = "bigger"\n'
    )
    assert tables(tmp_path / "runs", tmp_path / "results", "--reference", reference) != 0
    err = capsys.readouterr().err
    assert "readings.toml: readings[0]: claim 'bigger'" in err and "higher, lower, no-difference" in err
    assert not (tmp_path / "results").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[readings]]\ntable = "t"\nrow = "a"\nvs = "b"\nmetric = "order_acc"\nclaim = "none"\n')
    assert load_readings(bad)[0].claim == "no-difference"  # the plan's spelling
    bad.write_text('[[readings]]\ntable = "t"\nrow = "a"\nvs = "b"\nmetric = "t2v_R7x"\nclaim = "higher"\n')
    with pytest.raises(VerdictError, match="not a metric key"):
        load_readings(bad)
    bad.write_text(
        '[[readings]]\ntable = "t"\nrow = "a"\nvs = "b"\nmetric = "t2v_R1"\nclaim = "higher"\nwho = 1\n'
    )
    with pytest.raises(VerdictError, match="unknown key 'who'"):
        load_readings(bad)


def test_what_the_pipeline_calls_after_the_tables(tmp_path, reference):
    hand_suite(tmp_path / "runs", tables=[COMPONENTS], shift={"tdb": 4})
    assert tables(tmp_path / "runs", tmp_path / "results") == 0
    lines: list[str] = []
    assert (
        verdict_after_tables(tmp_path / "results", "q", tmp_path / "no-reference", echo=lines.append) is None
    )
    assert lines == [f"clip2video: no reference for suite 'q' under {tmp_path / 'no-reference'}/: no verdict"]
    lines.clear()
    verdict = verdict_after_tables(tmp_path / "results", "q", reference, kernels="avx512", echo=lines.append)
    assert verdict is not None and verdict.inside == verdict.total
    assert (tmp_path / "results" / "q" / "verdict.md").read_text() == verdict.markdown()
    printed = lines[0].splitlines()
    assert printed[:-1] == verdict.terminal().splitlines() and printed[-1].endswith("q/verdict.md")
    assert printed[-2].startswith("verdict for suite 'q' against")
