"""Run page on the recorded runs: status, charts with data, the completion browser, and
runs that failed, are damaged, or are still running."""

from __future__ import annotations

import json
import os

import pytest
from app_helpers import (
    IDS,
    add_posthoc,
    figure,
    figures,
    ok,
    page,
    set_status,
    texts,
    use_store,
)

from core import api

RLCR = IDS[1]


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def evals_of(run_id):
    return api.load_run(run_id).evals


def test_finished_run_shows_every_chart_with_data(runs_dir):
    at = ok(page("run", {"run": RLCR}))
    assert "rlcr" in at.title[0].value
    assert "finished" in texts(at)
    assert at.get("progress")[0].proto.value == 100
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    for part in ("Reward", "Accuracy", "Confidence histogram", "Reliability", "Pass@k",
                 "ECE, Brier and AUROC"):
        assert any(part in t for t in titles), (part, titles)
    assert all(any(len(tr.get("x", [])) for tr in f["data"]) for f in figures(at))


def test_histogram_and_reliability_follow_signal_and_step(runs_dir):
    evals = evals_of(RLCR)
    at = page("run", {"run": RLCR})
    last = evals[-1]["calibration"]["verbalized"]
    hist = figure(at, "Confidence histogram")
    assert f"step {evals[-1]['step']}" in hist["layout"]["title"]["text"]
    right, wrong = hist["data"]
    assert (right["name"], wrong["name"]) == ("correct", "wrong")
    assert right["y"] == last["hist_correct"] and wrong["y"] == last["hist_incorrect"]
    assert hist["layout"]["barmode"] == "stack"

    at.selectbox(key="run_signal").set_value("answer_prob").run()
    at.select_slider(key="run_step").set_value(evals[0]["step"]).run()
    ok(at)
    first = evals[0]["calibration"]["answer_prob"]
    hist = figure(at, "Confidence histogram")
    assert hist["data"][0]["y"] == first["hist_correct"]
    rel = figure(at, "Reliability")
    diagonal, points = rel["data"]
    assert diagonal["x"] == [0, 1] and diagonal["y"] == [0, 1]
    filled = [b for b in first["reliability"] if b["count"]]
    assert points["y"] == [b["accuracy"] for b in filled]
    at.select_slider(key="run_step").set_value(evals[-1]["step"]).run()
    names = [t["name"] for t in figure(at, "Reliability")["data"]]
    assert names[1].startswith(f"step {evals[0]['step']}")  # the start, for reference
    assert names[2].startswith(f"step {evals[-1]['step']}")


def test_pass_at_k_uses_a_log_axis_and_the_chosen_steps(runs_dir):
    evals = evals_of(RLCR)
    at = page("run", {"run": RLCR})
    pk = figure(at, "Pass@k")
    assert pk["layout"]["xaxis"]["type"] == "log"
    assert [t["name"] for t in pk["data"]] == [f"step {evals[0]['step']}",
                                               f"step {evals[-1]['step']}"]
    assert pk["data"][1]["y"] == [evals[-1]["pass_at_k"][k] for k in ("1", "2", "4")]
    at.multiselect(key="run_pk_steps").set_value([evals[1]["step"]]).run()
    assert [t["name"] for t in figure(at, "Pass@k")["data"]] == [f"step {evals[1]['step']}"]


def test_completion_browser_puts_confident_wrong_answers_first(runs_dir):
    at = page("run", {"run": RLCR})
    table = at.dataframe[0].value
    assert len(table) > 0
    wrong = table[~table["correct"]]
    assert list(table["correct"][: len(wrong)]) == [False] * len(wrong)
    q = list(wrong["verbalized q"])
    assert q == sorted(q, reverse=True)
    at.radio(key="run_samples_outcome").set_value("right").run()
    assert at.dataframe[0].value["correct"].all()
    at.text_input(key="run_samples_text").set_value("+").run()
    ok(at)


def test_failed_run_says_why_in_plain_words(runs_dir):
    set_status(runs_dir, RLCR, status="failed", error="TrainingError: the loss became nan at "
               "step 3", error_kind="unstable", step=3)
    at = ok(page("run", {"run": RLCR}))
    err = at.error[0].value
    assert "failed at step 3" in err and "Training became unstable" in err
    assert "Traceback" not in texts(at)


def test_dead_process_shows_as_failed_not_running(runs_dir):
    set_status(runs_dir, RLCR, status="running", pid=2**22 + 12345)  # no such process
    at = ok(page("run", {"run": RLCR}))
    assert "stopped without saying why" in at.error[0].value


def test_damaged_run_shows_as_damaged(runs_dir):
    (runs_dir / RLCR / "config.json").write_text("{not json")
    at = ok(page("run", {"run": RLCR}))
    assert "damaged" in at.error[0].value


def test_garbled_metrics_lines_are_skipped(runs_dir):
    with open(runs_dir / RLCR / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "eval/calibration": 3}\n[1, 2]\n{"no_step": 1}\n{"step": 10, "tr')
    ok(page("run", {"run": RLCR}))


def test_running_run_has_a_stop_button_and_an_eta(runs_dir, monkeypatch):
    set_status(runs_dir, RLCR, status="running", pid=os.getpid(), step=2)
    stopped = []
    monkeypatch.setattr(api, "stop", lambda run_id, **_: stopped.append(run_id) or True)
    at = ok(page("run", {"run": RLCR}))
    assert "left" in texts(at)  # "about N s left"
    at.button(key="run_stop").click().run()
    ok(at)
    assert stopped == [RLCR]


def test_a_run_with_nothing_logged_yet_says_so(runs_dir):
    set_status(runs_dir, RLCR, status="running", pid=os.getpid(), step=0)
    (runs_dir / RLCR / "metrics.jsonl").write_text("")
    at = ok(page("run", {"run": RLCR}))
    assert "Nothing logged yet" in texts(at)


def test_unknown_run_id_falls_back_to_the_latest(runs_dir):
    at = ok(page("run", {"run": "no-such-run"}))
    assert "There is no run" in at.warning[0].value
    assert at.selectbox(key="run_pick").value == IDS[-1]


def test_picking_another_run_updates_the_address(runs_dir):
    at = page("run", {"run": RLCR})
    at.selectbox(key="run_pick").set_value(IDS[0]).run()
    ok(at)
    assert at.query_params["run"] == IDS[0]
    assert "binary" in at.title[0].value


def test_empty_store(tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch, copy=False)
    assert "No runs yet" in texts(ok(page("run")))


def test_samples_file_shape_matches_the_browser(runs_dir):
    row = json.loads((runs_dir / RLCR / "samples.jsonl").read_text().splitlines()[0])
    for key in ("step", "prompt", "completion", "answer", "target", "correct",
                "confidence/verbalized", "confidence/answer_prob", "confidence/consistency"):
        assert key in row


def test_live_views_follow_new_evaluations_unless_the_user_moved_them(runs_dir):
    metrics = runs_dir / RLCR / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    steps = [json.loads(r)["step"] for r in rows]
    upto = lambda s: "\n".join(r for r, k in zip(rows, steps, strict=True) if k <= s) + "\n"  # noqa: E731
    metrics.write_text(upto(0))
    set_status(runs_dir, RLCR, status="running", pid=os.getpid(), step=0)
    at = ok(page("run", {"run": RLCR}))
    assert "One evaluation so far" in texts(at)
    metrics.write_text(upto(2))
    at.run()
    assert at.select_slider(key="run_step").value == 2
    assert at.multiselect(key="run_pk_steps").value == [0, 2]
    at.select_slider(key="run_step").set_value(0).run()
    metrics.write_text(upto(4))
    at.run()
    ok(at)
    assert at.select_slider(key="run_step").value == 0  # the user's choice stays
    assert at.multiselect(key="run_pk_steps").value == [0, 4]  # untouched: follows


def test_a_queued_run_shows_its_place_in_line_and_can_be_stopped(runs_dir, monkeypatch):
    set_status(runs_dir, RLCR, status="queued", pid=os.getpid(), step=0, queued_at=1.0)
    stopped = []
    monkeypatch.setattr(api, "stop", lambda run_id, **_: stopped.append(run_id) or True)
    at = ok(page("run", {"run": RLCR}))
    assert "queued" in texts(at)
    assert "number 1 in line" in at.info[0].value
    at.button(key="run_stop").click().run()
    assert stopped == [RLCR]


def test_a_stopped_run_can_continue_from_its_checkpoint(runs_dir, monkeypatch):
    set_status(runs_dir, RLCR, status="stopped", step=3, checkpoint_step=2)
    resumed = []
    monkeypatch.setattr(api, "resume", lambda run_id, **_: resumed.append(run_id) or run_id)
    at = ok(page("run", {"run": RLCR}))
    assert "from its checkpoint at step 2" in at.button(key="run_resume").help
    assert "stopped at step 3" in at.info[0].value
    at.button(key="run_resume").click().run()
    ok(at)
    assert resumed == [RLCR]


def test_a_refused_continue_is_shown_in_words(runs_dir, monkeypatch):
    set_status(runs_dir, RLCR, status="failed", error="RuntimeError: boom", step=3)

    def refuse(run_id, **_):
        raise ValueError("lr must be a finite number, got nan")

    monkeypatch.setattr(api, "resume", refuse)
    at = page("run", {"run": RLCR})
    at.button(key="run_resume").click().run()
    ok(at)
    assert "Could not continue the run: lr must be a finite number" in texts(at)
    assert "Traceback" not in texts(at)


def add_spread(root, run_id):
    """Give a recorded run's evaluations the entropy and distinct-answer keys newer runs log."""
    path = root / run_id / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        if "eval/accuracy" in row:
            row["eval/entropy"], row["eval/distinct_answers"] = 0.3 - 0.01 * i, 3.0 - 0.1 * i
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_spread_chart_draws_entropy_and_distinct_answers(runs_dir):
    at = ok(page("run", {"run": RLCR}))
    assert not any("Spread" in f["layout"]["title"]["text"] for f in figures(at))  # not logged
    add_spread(runs_dir, RLCR)
    at = ok(page("run", {"run": RLCR}))
    fig = figure(at, "Spread of the held-out samples")
    evals = evals_of(RLCR)
    assert fig["data"][0]["y"] == [e["entropy"] for e in evals]
    assert fig["data"][1]["y"] == [e["distinct_answers"] for e in evals]
    at = page("compare")
    options = at.selectbox(key="compare_metric").options
    assert "token entropy, nats (held-out)" in options
    assert "distinct answers per prompt (held-out)" in options


def set_truncation(runs_dir, train: float, held_out: float) -> None:
    path = runs_dir / RLCR / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        kind = "eval" if "eval/accuracy" in row else "train"
        row[f"{kind}/truncation_rate"] = train if kind == "train" else held_out
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def has_truncation_chart(at) -> bool:
    return any("Truncated" in f["layout"]["title"]["text"] for f in figures(ok(at)))


def test_truncation_rate_is_drawn_when_logged_and_left_out_when_not(runs_dir):
    assert not has_truncation_chart(page("run", {"run": RLCR}))  # older runs lack it
    set_truncation(runs_dir, 0.0, 0.0)
    assert not has_truncation_chart(page("run", {"run": RLCR}))  # logged, nothing was cut
    set_truncation(runs_dir, 0.25, 0.5)
    chart = figure(ok(page("run", {"run": RLCR})), "Truncated completions")
    train, held_out = chart["data"]
    assert set(train["y"]) == {0.25} and set(held_out["y"]) == {0.5}
    assert len(train["x"]) == len(api.load_run(RLCR).train)


def test_the_post_hoc_toggle_shows_the_recalibrated_signal(runs_dir):
    add_posthoc(runs_dir, RLCR)
    evals = evals_of(RLCR)
    at = ok(page("run", {"run": RLCR}))
    assert at.radio(key="run_calibration_view").value == "raw"
    raw = evals[-1]["calibration"]["verbalized"]
    assert figure(at, "Confidence histogram")["data"][0]["y"] == raw["hist_correct"]
    at.radio(key="run_calibration_view").set_value("after post-hoc recalibration").run()
    ok(at)
    post = evals[-1]["calibration"]["verbalized_recalibrated"]
    assert figure(at, "Confidence histogram")["data"][0]["y"] == post["hist_correct"]
    assert post["hist_correct"] != raw["hist_correct"]
    ece = next(m for m in at.metric if m.label == "ECE")
    assert ece.value == "0.012"
    assert ece.delta == f"{0.0123 - 0.4567:+.3f} vs raw"  # against the raw signal, same half
    cal = figure(at, "ECE, Brier and AUROC")
    assert cal["data"][0]["y"] == [0.0123] * len(evals)


def test_the_post_hoc_toggle_on_a_run_that_never_logged_it_says_so(runs_dir):
    at = page("run", {"run": RLCR})
    at.radio(key="run_calibration_view").set_value("after post-hoc recalibration").run()
    ok(at)
    assert "predate post-hoc recalibration" in texts(at)
    raw = evals_of(RLCR)[-1]["calibration"]["verbalized"]
    assert figure(at, "Confidence histogram")["data"][0]["y"] == raw["hist_correct"]
