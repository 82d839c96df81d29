"""Run: one run, live. Status, progress, stop; curves, histograms, reliability, Pass@k;
the completions it kept. While the run trains, only the live fragment refreshes."""

import pandas as pd
import streamlit as st

from core import api, charts
from ui import common, derived

common.page_setup("Run")

runs = api.list_runs()
if not runs:
    st.title(":material/monitoring: Run")
    st.info("No runs yet: start one on the Launch page or the quick comparison on Home.")
    st.stop()

ids = [r.id for r in runs]
by_id = {r.id: r for r in runs}
# Which run: a new ?run= in the address (a link) wins, then the picker, then the last opened.
q = st.query_params.get("run")
missing = q if q and q not in by_id else None
if q in by_id and q != st.session_state.get("run_applied_query"):
    st.session_state["run_pick"] = q
    st.session_state["run_applied_query"] = q
elif st.session_state.get("run_pick") not in by_id:
    last = st.session_state.get("run_id")
    st.session_state["run_pick"] = last if last in by_id else ids[0]
rec = by_id[st.session_state["run_pick"]]
st.title(f":material/monitoring: {common.recipe_of(rec)} · seed {rec.config.get('seed', '?')}")
if missing:
    st.warning(f"There is no run {missing!r} (deleted?). Showing the latest run.")
run_id = st.selectbox("Run", ids, key="run_pick", format_func=lambda i: common.run_label(by_id[i]))
if run_id != q:
    st.query_params["run"] = run_id
    st.session_state["run_applied_query"] = run_id
st.session_state["run_id"] = run_id
page_status = by_id[run_id].status


def filter_samples(samples: list[dict], at: object, outcome: str, text: str,
                   signal: str) -> list[dict]:
    """The kept completions that pass the filters, confident and wrong first."""
    conf = f"confidence/{signal}"
    rows = [s for s in samples if (at == "all" or s["step"] == at)
            and (outcome == "all" or bool(s.get("correct")) == (outcome == "right"))
            and text in str(s.get("prompt", ""))]
    # Confident and wrong first: wrong before right, then by falling confidence.
    rows.sort(key=lambda s: (bool(s.get("correct")), -(s.get(conf) or 0.0)))
    return rows


def samples_table(rows: list[dict]) -> pd.DataFrame:
    """One row per kept completion; a judged run's training samples add where they came
    from, the judge's verdict beside the truth, and a language-model judge's reasoning."""
    judged = any("verdict" in s for s in rows)
    return pd.DataFrame([{"step": s["step"], "prompt": s.get("prompt"),
                          "completion": s.get("completion"), "answer": s.get("answer"),
                          "target": s.get("target"), "correct": bool(s.get("correct")),
                          **({"from": s.get("source", "evaluation"),
                              "judge said": None if "verdict" not in s
                              else "correct" if s["verdict"] else "wrong",
                              "judge's reasoning": s.get("judge_reasoning")} if judged else {}),
                          "verbalized q": s.get("confidence/verbalized"),
                          "answer prob.": s.get("confidence/answer_prob"),
                          "consistency": s.get("confidence/consistency")} for s in rows[:500]])


@st.fragment(run_every=common.REFRESH_SECONDS if page_status in api.ACTIVE else None)
def live() -> None:
    common.require_sign_in()
    r, key = derived.load_run(run_id)  # shared by every session while the files stay put
    shared, figure = derived.shared, derived.figure
    if r is None:
        st.warning("This run was deleted.")
        return
    if r.status != page_status:  # it just ended: one full rerun turns the polling off
        st.rerun()
    st.caption(f"Run `{r.id}` · task {r.config.get('task', '?')} · model "
               f"{r.config.get('model', '?')} · tags: {', '.join(r.tags) or 'none'}")

    top1, top2 = st.columns([4, 1])
    total = max(1, r.total_steps)
    eta = shared((key, "eta"), lambda: api.eta(r))
    done = f"step {r.step} / {r.total_steps}"
    if r.status == "running":
        done += f" · about {common.fmt_duration(eta)} left" if eta is not None else " · starting…"
    top1.markdown(f"**Status: {common.status_md(r.status)}** · {done}"
                  + (f" · launched by {r.owner}" if r.owner else ""))
    top1.progress(min(1.0, r.step / total), text=done)
    if r.status == "queued":
        q = api.queue_state()
        place = q.position(r.id)
        st.info(f"Waiting for a free slot: {q.running} of {q.cap} runs train at once here"
                + (f", and this one is number {place} in line." if place else ".")
                + " It starts by itself.")
    mine = common.may_change(r)
    if r.status in api.ACTIVE and top2.button(
            "Stop", key="run_stop", icon=":material/stop:", disabled=not mine,
            help="Stops after the current step; what was logged so far stays."
            if mine else common.owner_note(r)):
        st.toast("Stopping after the current step…" if api.stop(r.id, user=common.user())
                 else "It already ended.")
    resume_help = (f"Continues this run from its checkpoint at step {r.checkpoint_step}."
                   if r.checkpoint_step else "No checkpoint yet: continues from step 0.")
    if api.can_resume(r) and top2.button("Continue", key="run_resume", disabled=not mine,
                                         icon=":material/play_arrow:",
                                         help=resume_help if mine else common.owner_note(r)):
        try:
            api.resume(r.id, user=common.user())
        except Exception as e:  # refused (workshop limits, a broken config): words only
            st.error(f"Could not continue the run: {e}")
        else:
            st.rerun()
    if r.status in ("failed", "damaged"):
        st.error(common.plain_error(r))
    elif r.status == "stopped":
        st.info(f"This run was stopped at step {r.step} of {r.total_steps}. Continue resumes "
                + (f"it from its checkpoint at step {r.checkpoint_step}." if r.checkpoint_step
                   else "it from step 0: it has no checkpoint yet."))
    if not r.train and not r.evals:
        st.info("Nothing logged yet: the model is loading and the step-0 evaluation is "
                "running. This page follows the run by itself.")
        return

    if r.config.get("judge", "exact") != "exact":  # the reward came from a judge
        st.plotly_chart(figure((key, "judge"), lambda: charts.judged_vs_true_run(r.train)),
                        key="run_chart_judge")
        st.caption(f"Judge: {r.config['judge']}. Judged accuracy is what the recipe was "
                   "rewarded for; true accuracy is the exact grader's on the same samples. A "
                   "gap that widens is the policy learning the judge's errors. Judged "
                   "training completions are in the browser below.")
    c1, c2 = st.columns(2)
    c1.plotly_chart(figure((key, "reward"), lambda: charts.reward(r.train)),
                    key="run_chart_reward")
    c2.plotly_chart(figure((key, "accuracy"), lambda: charts.accuracy(r.train, r.evals)),
                    key="run_chart_accuracy")
    # Drawn once a completion was cut: an all-zero chart (the embedded model, older runs that
    # never logged it) would only push the calibration charts down.
    if any(row.get("truncation_rate") for row in [*r.train, *r.evals]):
        st.plotly_chart(figure((key, "truncation"), lambda: charts.truncation(r.train, r.evals)),
                        key="run_chart_truncation")
    if not r.evals:
        st.info("No evaluation yet: histograms, reliability and Pass@k appear after the first.")
        return

    st.subheader("Confidence and calibration")
    ekey = derived.evals_key(r, key)  # these figures change only at evaluations
    steps = [e["step"] for e in r.evals]
    common.follow("run_step", steps[-1], steps)  # the newest, unless the user moved back
    s1, s2, s3 = st.columns([1, 1, 2])
    signal = s1.selectbox("Confidence signal", list(common.SIGNAL_LABELS), key="run_signal",
                          format_func=common.SIGNAL_LABELS.get,
                          help="verbalized: the q the model writes; answer probability: "
                               "π(answer span); consistency: share of the n samples giving "
                               "this answer.")
    posthoc = s2.radio("Calibration", common.CALIBRATION_VIEWS, key="run_calibration_view",
                       help=common.CALIBRATION_VIEW_HELP) == common.CALIBRATION_VIEWS[1]
    shown_signal = common.calibration_entry(signal, posthoc)
    if len(steps) > 1:
        step = s3.select_slider("Evaluation step", steps, key="run_step")
    else:
        step = steps[0]
        s3.caption(f"One evaluation so far, at step {step}.")
    ev = next(e for e in r.evals if e["step"] == step)
    if posthoc and not common.has_posthoc(r.evals):
        st.info("This run's evaluations predate post-hoc recalibration: only the raw "
                "signals were logged. Runs started now log both.")
        posthoc, shown_signal = False, signal
    elif posthoc:
        st.caption("On the half of the held-out prompts the map was not fitted on; the "
                   "change beside each figure is against the raw signal on that same half.")
    h1, h2 = st.columns(2)
    h1.plotly_chart(figure((ekey, "hist", step, shown_signal),
                           lambda: charts.confidence_histogram(ev, shown_signal)),
                    key="run_chart_hist")
    shown = [(f"step {step}", ev, "#1f77b4")]
    if step != steps[0]:  # the starting point, faded, to see how far training moved it
        shown.insert(0, (f"step {steps[0]}", r.evals[0], "#c7c7c7"))
    h2.plotly_chart(figure((ekey, "rel", step, shown_signal), lambda: charts.reliability(
        shown, shown_signal, f"Reliability at step {step}")), key="run_chart_rel")
    cal = (ev.get("calibration") or {}).get(shown_signal) or {}
    raw = common.raw_on_half(ev, signal) if posthoc else {}
    m = st.columns(5)
    for col, (label, name) in zip(m, (("ECE", "ece"), ("Brier", "brier"), ("AUROC", "auroc"),
                                      ("mean confidence", "mean_confidence")), strict=False):
        value, before = cal.get(name), raw.get(name)
        change = (value - before if isinstance(value, int | float)
                  and isinstance(before, int | float) else None)
        col.metric(label, common.fmt_num(value),
                   delta=None if change is None else f"{change:+.3f} vs raw",
                   delta_color={"ece": "inverse", "brier": "inverse", "auroc": "normal"}
                   .get(name, "off"))  # lower is better, higher is better, neither
    m[4].metric("accuracy", common.fmt_num(ev.get("accuracy")))

    common.follow("run_pk_steps", sorted({steps[0], steps[-1]}), steps)
    chosen = st.multiselect("Pass@k curves at evaluation steps", steps, key="run_pk_steps")
    p1, p2 = st.columns(2)
    palette = charts.PALETTE
    p1.plotly_chart(figure((ekey, "passk", tuple(chosen)), lambda: charts.pass_at_k(
        [(f"step {e['step']}", e.get("pass_at_k"), palette[i % len(palette)], "solid")
         for i, e in enumerate(r.evals) if e["step"] in chosen])), key="run_chart_passk")
    p2.plotly_chart(figure((ekey, "cal", shown_signal),
                           lambda: charts.calibration_over_steps(r.evals, shown_signal)),
                    key="run_chart_cal")
    if any(e.get("entropy") is not None for e in r.evals):  # runs logged before it lack it
        st.plotly_chart(figure((ekey, "spread"), lambda: charts.spread(r.evals)),
                        key="run_chart_spread")

    st.subheader("Completions")
    samples, skey = derived.load_samples(key)
    if not samples:
        st.caption("This run kept no completions.")
        return
    f1, f2, f3 = st.columns(3)
    sample_steps = sorted({s["step"] for s in samples})
    common.follow("run_samples_step", sample_steps[-1], ["all", *sample_steps])
    at = f1.selectbox("At step", ["all", *sample_steps], key="run_samples_step")
    outcome = f2.radio("Outcome", ["all", "wrong", "right"], horizontal=True,
                       key="run_samples_outcome")
    text = f3.text_input("Prompt contains", key="run_samples_text")
    rows = shared((skey, at, outcome, text, signal),
                  lambda: filter_samples(samples, at, outcome, text, signal))
    table = derived.table((skey, "table", at, outcome, text, signal),
                          lambda: samples_table(rows))
    st.caption(f"{len(rows)} completions; confident and wrong first "
               f"(sorted by {common.SIGNAL_LABELS[signal]}).")
    st.dataframe(table, hide_index=True, key="run_samples_table",
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("verbalized q", "answer prob.", "consistency")})


live()


check = api.consistency_check(run_id) if page_status == "finished" else None


@st.fragment(run_every=common.REFRESH_SECONDS if check and check.state == "running" else None)
def consistency_panel() -> None:
    """The consistency experiment's point for this run: its start and end policy answer the
    same questions many times at each temperature (a background check, not this page)."""
    now = api.consistency_check(run_id)
    if check is not None and now.state != check.state:  # it just ended: stop polling
        st.rerun()
    st.subheader("Consistency is not reliability")
    st.caption("Each question answered many times at temperatures 0 to 1 by this run's start "
               "and end policy. At T = 0 every repetition gives the same output (ω = 1), yet "
               "accuracy shows how often that one output is wrong.")
    r = by_id[run_id]
    mine = common.may_change(r)
    if now.state != "running" and st.button(
            "Check consistency" if now.state == "none" else "Check again",
            key="run_consistency_start", icon=":material/repeat:", disabled=not mine,
            help="Runs in the background on one thread (about a minute on the embedded "
                 "model); it takes no training slot." if mine else common.owner_note(r)):
        try:
            api.start_consistency_check(run_id, user=common.user())
        except Exception as e:  # refused (not the owner, already running): words only
            st.error(f"Could not start the check: {e}")
        else:
            st.rerun()
    if now.state == "running":
        st.info("Checking: the start and end policy are answering every question "
                f"{now.plan.get('repetitions') or 'many'} times at "
                "each temperature. This panel updates by itself.")
    elif now.state == "failed":
        st.error("The last check ended without a result; its log is consistency.log in the "
                 "run's folder. Check again to retry.")
    if now.means:
        c1, c2 = st.columns(2)
        omega, accuracy, _ = charts.consistency_vs_temperature(now.means)
        c1.plotly_chart(omega, key="run_consistency_omega")
        c2.plotly_chart(accuracy, key="run_consistency_accuracy")
        st.dataframe(pd.DataFrame([{"model": m["recipe"], "T": m["temperature"],
                                    **{k: m[k]["mean"] for k in
                                       ("repeatability", "omega", "alpha", "accuracy", "ece")}}
                                   for m in now.means]),
                     hide_index=True, key="run_consistency_table")
        same = now.determinism.get("identical")
        st.caption(f"{now.plan.get('questions')} questions × {now.plan.get('repetitions')} "
                   "repetitions per temperature. Greedy outputs across generation batch "
                   "sizes: " + ("identical." if same else "some differ (floating-point sums "
                                "in another order flip an argmax)."))


if check is not None:
    consistency_panel()
