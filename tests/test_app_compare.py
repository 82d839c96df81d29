"""Compare on the recorded classic comparison: overlays, final Pass@k and reliability,
and the start -> end summary that the CSV holds."""

from __future__ import annotations

import pytest
from app_helpers import GROUP, IDS, add_posthoc, figure, ok, page, texts, use_store

from core import api
from ui import common


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_defaults_to_the_latest_classic_comparison(runs_dir):
    at = ok(page("compare"))
    assert sorted(at.multiselect(key="compare_runs").value) == IDS
    assert at.selectbox(key="compare_group").value == GROUP
    names = [t["name"] for t in figure(at, "ECE")["data"]]
    assert [n.split()[0] for n in names] == ["binary", "rlcr", "psr", "nsr"]
    pk = figure(at, "Pass@k at each run's last evaluation")
    assert pk["layout"]["xaxis"]["type"] == "log" and len(pk["data"]) == 4
    rel = figure(at, "Reliability at each run's last evaluation")
    assert len(rel["data"]) == 1 + 4  # the diagonal, then one line per run
    table = at.dataframe[0].value
    assert list(table.columns) == [common.short_label(api.load_run(i)) for i in IDS]
    assert "→" in table.loc["accuracy"].iloc[0]
    assert at.get("download_button")


def test_query_params_choose_the_runs(runs_dir):
    at = ok(page("compare", {"runs": f"{IDS[0]},{IDS[3]},not-a-run"}))
    assert at.multiselect(key="compare_runs").value == [IDS[0], IDS[3]]
    assert len(figure(at, "Pass@k")["data"]) == 2


def test_any_metric_can_be_overlaid(runs_dir):
    at = page("compare")
    options = at.selectbox(key="compare_metric").options
    assert "Pass@4 (held-out)" in options and "reward (train)" in options
    at.selectbox(key="compare_metric").set_value("reward (train)").run()
    ok(at)
    fig = figure(at, "reward (train)")
    run = api.load_run(IDS[0])
    assert fig["data"][0]["y"] == [t["reward/mean"] for t in run.train]


def test_summary_rows_hold_start_end_and_delta(runs_dir):
    records = [api.load_run(i) for i in IDS]
    rows = common.summary_rows(records, "verbalized")
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert len(acc) == 4
    for row, rec in zip(acc, records, strict=True):
        assert row["start"] == rec.evals[0]["accuracy"] and row["end"] == rec.evals[-1]["accuracy"]
        assert row["delta"] == pytest.approx(row["end"] - row["start"])
        assert (row["start_step"], row["end_step"]) == (0, rec.evals[-1]["step"])
    metrics = {r["metric"] for r in rows}
    assert {"Pass@1", "Pass@4", "ECE (verbalized)", "AUROC (verbalized)"} <= metrics


def test_removing_every_run_asks_for_one(runs_dir):
    at = page("compare")
    at.multiselect(key="compare_runs").set_value([]).run()
    ok(at)
    assert "Pick at least one run" in at.info[0].value


def test_a_damaged_run_in_the_comparison_is_flagged(runs_dir):
    (runs_dir / IDS[2] / "status.json").write_text("garbage")
    at = ok(page("compare"))
    assert any("damaged" in w.value for w in at.warning)


def test_empty_store(tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch, copy=False)
    assert "No runs yet" in ok(page("compare")).info[0].value


def _second_seed(root, run_id, new_id, shift):
    """A copy of a recorded run as seed 1, its held-out accuracy moved by `shift`."""
    import json
    import shutil

    shutil.copytree(root / run_id, root / new_id)
    config = json.loads((root / new_id / "config.json").read_text())
    (root / new_id / "config.json").write_text(json.dumps({**config, "seed": 1}))
    rows = [json.loads(line) for line in (root / new_id / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if "eval/accuracy" in row:
            row["eval/accuracy"] += shift
    (root / new_id / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_seeds_of_the_same_settings_pool_into_mean_and_sd(runs_dir):
    twin = IDS[0].replace("s0", "s1") + "b"
    _second_seed(runs_dir, IDS[0], twin, 0.1)
    at = page("compare", {"runs": f"{IDS[0]},{twin},{IDS[1]}"})
    at.selectbox(key="compare_metric").set_value("accuracy (held-out, sampled)").run()
    ok(at)
    assert at.toggle(key="compare_seeds").value
    fig = figure(at, "accuracy (held-out, sampled)")
    lines = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in lines] == ["recipe=binary (n = 2)", "recipe=rlcr (n = 1)"]
    one, two = api.load_run(IDS[0]).evals, api.load_run(twin).evals
    assert lines[0]["y"] == pytest.approx([(a["accuracy"] + b["accuracy"]) / 2
                                           for a, b in zip(one, two, strict=True)])
    # sample sd of two values 0.1 apart: 0.1 / sqrt(2)
    assert lines[0]["customdata"][0] == pytest.approx(0.1 / 2 ** 0.5)
    table = at.dataframe[0].value
    assert list(table.columns) == ["recipe=binary (n = 2)", "recipe=rlcr (n = 1)"]
    assert "±" in table.loc["accuracy"].iloc[0] and "±" not in table.loc["accuracy"].iloc[1]
    at.toggle(key="compare_seeds").set_value(False).run()
    assert len(ok(at).dataframe[0].value.columns) == 3


def test_the_post_hoc_toggle_switches_every_calibration_view(runs_dir):
    for run_id in IDS:
        add_posthoc(runs_dir, run_id)
    at = ok(page("compare"))
    raw = figure(at, "ECE")["data"][0]["y"]
    at.radio(key="compare_calibration_view").set_value("after post-hoc recalibration").run()
    ok(at)
    metric = figure(at, "ECE — verbalized, post-hoc")
    assert all(y == [0.0123] * len(raw) for y in (t["y"] for t in metric["data"]))
    rel = figure(at, "Reliability at each run's last evaluation")
    assert all("ECE 0.01" in t["name"] for t in rel["data"][1:])
    table = at.dataframe[0].value
    assert "ECE (verbalized, post-hoc)" in table.index
    assert "predate" not in texts(at)


def test_the_post_hoc_toggle_names_runs_that_never_logged_it(runs_dir):
    at = page("compare")
    at.radio(key="compare_calibration_view").set_value("after post-hoc recalibration").run()
    ok(at)
    assert "predate post-hoc recalibration" in texts(at)
