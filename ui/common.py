"""Small shared pieces of the pages: run labels, status words, plain-language errors,
which run a page shows, and the metric catalogue that Compare and Run offer."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from core import api
from core.metrics import SIGNALS, raw_half, recalibrated
from core.runtime.estimates import Estimate
from core.runtime.failures import ErrorKind
from core.runtime.store import ENDED_UNREPORTED, RunRecord

REFRESH_SECONDS = 2.0  # live views poll the run folder this often
STATUS_COLORS = {"queued": "violet", "running": "blue", "finished": "green", "failed": "red",
                 "stopped": "gray", "damaged": "orange"}
PAGES = {"home": "app.py", "launch": "pages/launch.py", "run": "pages/run.py",
         "compare": "pages/compare.py", "runs": "pages/runs.py", "report": "pages/report.py",
         "host": "pages/host.py", "sweep": "pages/sweep.py"}


NAV = (("home", "Home", ":material/home:"), ("launch", "Launch", ":material/rocket_launch:"),
       ("run", "Run", ":material/monitoring:"), ("compare", "Compare", ":material/compare_arrows:"),
       ("sweep", "Sweep", ":material/grid_on:"), ("runs", "Runs", ":material/folder_open:"))


def page_setup(title: str) -> None:
    """First call of every page: wide layout, the workshop gate, the lab's own sidebar
    navigation (Streamlit's is hidden in .streamlit/config.toml, it would show file names),
    and the device probe."""
    st.set_page_config(page_title=f"{title} · Calibration Lab", page_icon=":material/target:",
                       layout="wide")
    ws = api.workshop_settings()
    if ws.enabled:
        gate(ws)
    api.detected_device()  # starts the subprocess probe once; never blocks
    with st.sidebar:
        st.markdown("### :material/target: Calibration Lab")
        for page, label, icon in NAV:
            st.page_link(PAGES[page], label=label, icon=icon)
        if is_host():
            st.page_link(PAGES["host"], label="Host", icon=":material/admin_panel_settings:")
        if ws.enabled:
            n = ws.runs_per_user
            st.caption(f"Signed in as **{user()}** · up to {n} live run{'s' * (n != 1)}")
            if st.button("Sign out", key="gate_sign_out", icon=":material/logout:"):
                sign_out()
                st.rerun()


def gate(ws: api.workshop.Workshop) -> None:
    """Workshop mode: nothing of the lab is drawn (and nothing read) for a session until it
    has given the access token. Every page calls this first, so direct links are gated too."""
    if ws.setup_problem:
        st.error(f"This lab is in workshop mode but not set up safely: {ws.setup_problem}.")
        st.stop()
    if recheck(ws):
        return
    st.title(":material/lock: Calibration Lab · workshop")
    if ws.codes:
        code_gate()
        st.stop()
    with st.form("gate_form", clear_on_submit=True):  # the token does not linger in the form
        name = st.text_input("Your name", key="gate_name", max_chars=40,
                             help="Labels your runs; only you can stop, continue, tag or "
                                  "delete them.")
        token = st.text_input("Access token", type="password", key="gate_token",
                              help="The host gives it to the room.")
        entered = st.form_submit_button("Enter", type="primary")
    if entered:
        try:
            st.session_state["lab_user"] = api.sign_in(token, name)
        except api.WorkshopError as e:
            time.sleep(1.0)  # makes guessing slow from one session
            st.error(str(e))
        else:
            st.rerun()
    st.stop()


def code_gate() -> None:
    """Sign-in with a participant code alone: it carries the name, so nobody picks one."""
    with st.form("gate_code_form", clear_on_submit=True):
        code = st.text_input("Your code", type="password", key="gate_code",
                             help="The host hands each person their own code, e.g. "
                                  "ABCD-EFGH-JKMN. It signs you in under your name.")
        entered = st.form_submit_button("Enter", type="primary")
    if entered:
        try:
            found = api.sign_in_code(code, source())
        except api.WorkshopError as e:
            st.error(str(e))
        else:
            st.session_state.update(lab_user=found.name, lab_code=found.id)
            st.rerun()


def source() -> str:
    """Where a sign-in comes from, for the wrong-code delay: the connection's IP address
    (the TCP peer, not a header a client could write); local connections share one."""
    ip = st.context.ip_address
    return ip if isinstance(ip, str) and ip else "local"  # (AppTest has no connection)


def session_key() -> str:
    return st.session_state.setdefault("lab_session", secrets.token_hex(8))


def sign_out() -> None:
    api.workshop.gone(session_key())
    for k in ("lab_user", "lab_code"):
        st.session_state.pop(k, None)


def recheck(ws: api.workshop.Workshop | None = None) -> bool:
    """Whether this session is still signed in, checked again at every action (full reruns,
    fragment reruns, buttons): a revoked code, or a shared-token session once the host has
    made codes, is signed out here. Outside workshop mode: always True."""
    ws = ws or api.workshop_settings()
    if not ws.enabled:
        return True
    name, code_id = st.session_state.get("lab_user"), st.session_state.get("lab_code")
    if name and ws.codes and api.codes.live_code(code_id) is None:
        sign_out()
        name = None
    if name:
        api.workshop.seen(session_key(), name, code_id, source(), time.time())
    return bool(name)


def require_sign_in() -> None:
    """At every action, including live fragments (they rerun without page_setup): a session
    whose code was revoked meanwhile is sent to the sign-in page before anything happens."""
    had = bool(st.session_state.get("lab_user"))
    if not recheck() and had:
        st.rerun(scope="app")


def user() -> str | None:
    """The signed-in workshop name; None outside workshop mode."""
    require_sign_in()
    return st.session_state.get("lab_user")


def is_host() -> bool:
    """Whether this session signed in with a live host code."""
    return api.workshop_settings().codes and api.codes.is_host(user())


def may_change(r: RunRecord) -> bool:
    """Whether this session may stop, continue, tag or delete the run (workshop: its own)."""
    return not api.workshop_settings().enabled or (r.owner is not None and r.owner == user())


def owner_note(r: RunRecord) -> str:
    return f"only {r.owner or 'the host'} can change this run"


def status_text(status: str) -> str:
    """The status in words (plain text: tables, select boxes)."""
    return status


def status_md(status: str) -> str:
    """The status with a colored dot, for markdown."""
    return f":{STATUS_COLORS.get(status, 'gray')}[●] {status}"


def recipe_of(r: RunRecord) -> str:
    return str(r.config.get("recipe", "?"))


def run_label(r: RunRecord, status: bool = False) -> str:
    """`rlcr · seed 0 · add · 11-28 13:21 (a262)` - what a person picks a run by.

    Pickers leave the status out: a select box keeps showing an option's first label after
    the run's status changes, so it would say "running" for a finished run. Links show it."""
    if r.status == "damaged":
        return f"{r.id} · damaged"
    when = time.strftime("%m-%d %H:%M", time.localtime(r.started_at)) if r.started_at else "?"
    task = api.task_label(str(r.config.get("task", "?")))
    label = f"{recipe_of(r)} · seed {r.config.get('seed', '?')} · {task} · {when} ({r.id[-4:]})"
    return f"{label} · {status_md(r.status)}" if status else label


def latex_lines(formula: str, width: int = 60) -> str:
    """A long formula broken at its top-level `,\\ ` separators so it fits a column."""
    parts = formula.split(r",\ ")
    if len(formula) <= width or len(parts) < 2:
        return formula
    return (r"\begin{gathered}" + parts[0] + r" \\ " + r",\ ".join(parts[1:])
            + r"\end{gathered}")


def short_label(r: RunRecord) -> str:
    return f"{recipe_of(r)} s{r.config.get('seed', '?')} ({r.id[-4:]})"


# What a student can do about each kind of failure (core.runtime.failures.ErrorKind).
ERROR_ADVICE = {
    ErrorKind.OUT_OF_MEMORY: "The model did not fit in memory: lower G, prompts per step or "
                             "the evaluation sizes, or use a smaller model.",
    ErrorKind.UNSTABLE: "Training became unstable: lower the learning rate.",
    ErrorKind.CHECKPOINT: "The checkpoint cannot be used: start a new run instead.",
    ErrorKind.MODEL: "The model could not be loaded.",
    ErrorKind.FILES: "A file could not be read or written (full disk? missing model?).",
    ErrorKind.CONFIG: "Its settings file was edited or damaged after the launch.",
    ErrorKind.NOT_STARTED: "The training process could not be started.",
}


def plain_error(r: RunRecord) -> str:
    """Why a run ended badly, in words a student can act on, chosen by its error kind."""
    err = (r.error or "").strip()
    if r.status == "damaged":
        return (f"This run's folder is damaged and cannot be read ({err or 'unknown reason'}). "
                "Delete it on the Runs page, or inspect it in the runs folder.")
    if r.error_kind == ErrorKind.ENDED_UNREPORTED:
        detail = err.removeprefix(ENDED_UNREPORTED).lstrip(": ")  # e.g. killed by SIGKILL
        return ("The training process stopped without saying why: it was killed, ran out of "
                "memory, or the machine restarted" + (f" ({detail})" if detail else "")
                + ". What it logged before is still shown; Continue resumes it from its last "
                "checkpoint.")
    text = err or "no reason was recorded"
    advice = ERROR_ADVICE.get(r.error_kind, "")
    return f"The run failed at step {r.step} of {r.total_steps}: {text}. {advice}".strip()


def fmt_duration(seconds: float | None) -> str:
    """`12 s`, `3 min 05 s`, `1 h 02 min`; "unknown" for None or not finite."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def fmt_estimate(est: Estimate | None) -> str:
    """An estimate with how sure it is: `about 30 s (25–36 s; measured on …)`."""
    if est is None:
        return "an unknown time (no measured costs: run benchmarks/costs.py)"
    span = (f"{fmt_duration(est.low)}–{fmt_duration(est.high)}" if
            fmt_duration(est.low) != fmt_duration(est.high) else fmt_duration(est.low))
    return f"about **{fmt_duration(est.seconds)}** ({span}; {est.basis})"


def query_run_id() -> str | None:
    """The run a page should show: ?run=... in the address, else the last one opened."""
    rid = st.query_params.get("run")
    return rid or st.session_state.get("run_id")


def follow(key: str, value: Any, valid: Sequence[Any]) -> None:
    """Set widget `key` to `value` (e.g. the newest evaluation) before it is drawn, unless
    the user has moved it away from what this function set last time; a live view then
    follows a running run without fighting the user."""
    auto = f"{key}__auto"
    current = st.session_state.get(key)
    values = current if isinstance(current, list) else [current]
    if (key not in st.session_state or current == st.session_state.get(auto)
            or any(v not in valid for v in values)):
        st.session_state[key] = value
    st.session_state[auto] = value


def open_run(run_id: str) -> None:
    st.session_state["run_id"] = run_id
    st.switch_page(PAGES["run"], query_params={"run": run_id})


def open_compare(run_ids: Sequence[str], group: str | None = None) -> None:
    st.session_state["compare_ids"] = list(run_ids)
    params = {"group": group} if group else {"runs": ",".join(run_ids)}
    st.switch_page(PAGES["compare"], query_params=params)


# --- the metric catalogue -----------------------------------------------------------------

TRAIN_LABELS = {"reward/mean": "reward (train)", "accuracy": "accuracy (train batch)",
                "loss": "loss (train)", "format_rate": "format rate (train)",
                "mean_length": "completion length (train)",
                "confidence/verbalized": "stated confidence q (train)",
                "confidence/answer_prob": "answer probability (train)",
                "grad_norm": "gradient norm (train)", "seconds": "seconds per step",
                "rows_scored": "share of rows with advantage (train)"}
EVAL_LABELS = {"accuracy": "accuracy (held-out, sampled)",
               "greedy_accuracy": "greedy accuracy (held-out, T = 0)",
               "format_rate": "format rate (held-out)",
               "mean_length": "completion length (held-out)",
               "entropy": "token entropy, nats (held-out)",
               "distinct_answers": "distinct answers per prompt (held-out)"}
CAL_LABELS = {"ece": "ECE", "brier": "Brier", "auroc": "AUROC",
              "overconfidence": "overconfidence", "mean_confidence": "mean confidence"}
# The confidence signals (core.metrics.SIGNALS) in words: for pickers, and short for labels.
SIGNAL_LABELS = {"verbalized": "verbalized (stated q)", "answer_prob": "answer probability",
                 "consistency": "consistency (agreement of n samples)"}
SHORT_SIGNAL = {"verbalized": "verbalized", "answer_prob": "answer prob.",
                "consistency": "consistency"}
# The Run and Compare pages' toggle: the signals as measured, or after post-hoc recalibration
# (core.recalibration: a monotone map fitted on half the held-out prompts, shown on the other).
CALIBRATION_VIEWS = ("raw", "after post-hoc recalibration")
CALIBRATION_VIEW_HELP = (
    "After post-hoc recalibration: each evaluation fits a monotone (isotonic) map from the "
    "signal to the chance of being right on one half of the held-out prompts (a fixed split "
    "by question) and shows the mapped signal on the other half. It fixes the numbers (ECE) "
    "without any training change, but keeps the ranking, so AUROC barely moves.")




def short_signal(entry: str) -> str:
    """A calibration entry's short label: the signal's, with ", post-hoc" when recalibrated."""
    posthoc = {recalibrated(s): s for s in SIGNALS}
    if entry in posthoc:
        return f"{SHORT_SIGNAL[posthoc[entry]]}, post-hoc"
    return SHORT_SIGNAL.get(entry, entry)


def calibration_entry(signal: str, posthoc: bool) -> str:
    """The eval entry under calibration/ a page shows for `signal` in the chosen view."""
    return recalibrated(signal) if posthoc else signal


def calibration_field(field: str, posthoc: bool) -> str:
    """An eval metric key in the chosen view: calibration/<signal>/<x> becomes
    calibration/<signal>_recalibrated/<x> after post-hoc recalibration; others stay."""
    parts = field.split("/")
    if posthoc and len(parts) == 3 and parts[0] == "calibration" and parts[1] in SIGNALS:
        return "/".join([parts[0], recalibrated(parts[1]), parts[2]])
    return field


def has_posthoc(evals: Sequence[dict[str, Any]]) -> bool:
    """Whether any of these evaluations logged the recalibrated signals (older runs did not)."""
    return any(recalibrated(SIGNALS[0]) in (e.get("calibration") or {}) for e in evals)


def raw_on_half(ev: dict[str, Any], signal: str) -> dict[str, Any]:
    """The raw signal's calibration entry on the half the recalibrated one is measured on."""
    return (ev.get("calibration") or {}).get(raw_half(signal)) or {}


def metric_catalogue(records: Sequence[RunRecord]) -> dict[str, tuple[str, str]]:
    """Label -> (source, key): every metric some record has, eval metrics first."""
    out: dict[str, tuple[str, str]] = {}
    for key, label in EVAL_LABELS.items():
        out[label] = ("eval", key)
    ks = sorted({int(k) for r in records for e in r.evals
                 for k in (e.get("pass_at_k") or {}) if str(k).isdigit()})
    for k in ks:
        out[f"Pass@{k} (held-out)"] = ("eval", f"pass_at_k/{k}")
    for sig in SIGNALS:
        for key, label in CAL_LABELS.items():
            out[f"{label} — {SHORT_SIGNAL[sig]}"] = ("eval", f"calibration/{sig}/{key}")
    train_keys: list[str] = []
    for r in records:
        for row in r.train[:1]:
            train_keys += [k for k in row if k != "step" and k not in train_keys]
    for key in train_keys:
        out[TRAIN_LABELS.get(key, f"{key} (train)")] = ("train", key)
    return out


def nested(d: dict[str, Any] | None, key: str) -> Any:
    v: Any = d
    for part in key.split("/"):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def fmt_num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) and not isinstance(v, bool) else "—"


def summary_rows(records: Sequence[RunRecord], signal: str) -> list[dict[str, Any]]:
    """Start -> end of the headline metrics, one row per (run, metric): the CSV's rows."""
    metrics = [("accuracy", "accuracy"), ("greedy accuracy", "greedy_accuracy")]
    ks = sorted({int(k) for r in records for e in r.evals[-1:]
                 for k in (e.get("pass_at_k") or {}) if str(k).isdigit()})
    if ks:
        metrics += [("Pass@1", "pass_at_k/1")] + ([(f"Pass@{ks[-1]}", f"pass_at_k/{ks[-1]}")]
                                                  if ks[-1] != 1 else [])
    metrics += [("token entropy", "entropy"), ("distinct answers", "distinct_answers")]
    sig = short_signal(signal)
    metrics += [(f"{label} ({sig})", f"calibration/{signal}/{key}")
                for key, label in CAL_LABELS.items() if key != "overconfidence"]
    rows = []
    for r in records:
        first, last = (r.evals[0], r.evals[-1]) if r.evals else (None, None)
        for label, key in metrics:
            a, b = nested(first, key), nested(last, key)
            num = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
            rows.append({"run": r.id, "recipe": recipe_of(r), "metric": label,
                         "start_step": (first or {}).get("step"),
                         "end_step": (last or {}).get("step"),
                         "start": a, "end": b, "delta": b - a if num else None})
    return rows


def summary_table(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> pd.DataFrame:
    """The rows as one column per run, each cell `start → end (change)`."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    label = dict(zip(runs, names, strict=False))
    table: dict[str, dict[str, str]] = {}
    for r in rows:
        cell = f"{fmt_num(r['start'])} → {fmt_num(r['end'])}"
        if r["delta"] is not None:
            cell += f" ({r['delta']:+.3f})"
        table.setdefault(label.get(r["run"], r["run"]), {})[r["metric"]] = cell
    return pd.DataFrame(table)
