"""The experiment report: plain Plotly figures and one self-contained HTML page.

Everything here is a pure function of the experiment's summary dict (see
`core.experiments.aggregation.build_summary`), so a report can be rebuilt from `summary.json` alone.
Charts come from `core.charts` (plotly only, no streamlit), the same ones the app draws.
The page inlines plotly.js once and loads nothing from the network.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from core import charts
from core.experiments.aggregation import SIGNAL_WORDS
from core.experiments.claim_targets import POSTHOC_ARM
from core.metrics import SIGNALS, raw_half, recalibrated

ANSWER_PROB_COLOR = "#7f7f7f"
CURVES = (  # (summary metric key, title, y range); "pass@K" stands for the largest k
    ("accuracy", "Held-out accuracy (sampled, Pass@1)", (0, 1.02)),
    ("pass@K", "Pass@{k}", (0, 1.02)),
    ("verbalized/ece", "Verbalized confidence: ECE ↓", (0, 1.02)),
    ("verbalized/auroc", "Verbalized confidence: AUROC (0.5 = blind)", (0, 1.02)),
    ("answer_prob/ece", "Answer probability: ECE ↓", (0, 1.02)),
    ("answer_prob/overconfidence", "Answer probability: overconfidence", None),
)
STATUS_COLORS = {"PASS": "#2ca02c", "FAIL": "#d62728", "not run": "#7f7f7f",
                 "report": "#1f77b4"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1400px;padding:0 16px;color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.sd{color:#888;font-size:.85em}.grid{display:grid;gap:12px;
grid-template-columns:repeat(auto-fill,minmax(420px,1fr))}
.pair{display:grid;gap:12px;grid-template-columns:1fr 1fr}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:1px 8px;font-weight:600}
.question{font-size:1.1em;background:#f7f7fb;border-left:4px solid #1f77b4;padding:8px 12px}
.note{color:#555;font-style:italic}.settings td{font-family:ui-monospace,monospace}
"""


def _color(recipe: str) -> str | None:
    return charts.RECIPE_COLORS.get(recipe)


def _k_key(summary: dict[str, Any], key: str) -> str:
    return key.replace("pass@K", f"pass@{summary['pass_k_max']}")


# --- figures: pure functions of the summary ------------------------------------------------
def curve_figure(summary: dict[str, Any], key: str, title: str,
                 y_range: Sequence[float] | None = None) -> go.Figure:
    """One metric over training steps, mean over seeds, one line per recipe; a metric without
    a fixed range (overconfidence) gets a dotted zero line."""
    key = _k_key(summary, key)
    series = [charts.Series(recipe, c["step"], c.get(key, []), _color(recipe))
              for recipe, c in summary["curves"].items()]
    fig = charts.lines(series, title.format(k=summary["pass_k_max"]), y_range=y_range)
    if y_range is None:  # a signed metric: mark zero
        fig.add_hline(y=0, line={"color": "#999999", "dash": "dot", "width": 1})
    return fig


def _as_eval(cal: dict[str, Any] | None, step: Any, signal: str = "verbalized") -> dict:
    """A pooled calibration table dressed as a store eval entry, for core.charts."""
    return {"step": step, "calibration": {signal: cal or {}}}


def reliability_figure(summary: dict[str, Any], recipe: str) -> go.Figure:
    """A recipe's final reliability diagram against the diagonal, pooled over seeds:
    verbalized confidence in the recipe's color, answer probability in grey."""
    end = summary["calibration"][recipe]["end"]
    items = [("verbalized", _as_eval(end["verbalized"], end["step"]), _color(recipe)),
             ("answer probability", _as_eval(end["answer_prob"], end["step"]),
              ANSWER_PROB_COLOR)]
    return charts.reliability(items, "verbalized",
                              title=f"{recipe}: reliability at step {end['step']}")


def histogram_figure(summary: dict[str, Any], recipe: str, when: str,
                     signal: str = "verbalized") -> go.Figure:
    """Counts per confidence bin, correct and wrong stacked, pooled over seeds."""
    part = summary["calibration"][recipe][when]
    return charts.confidence_histogram(_as_eval(part[signal], part["step"], signal), signal,
                                       label=f" — {recipe} ({when})")


# --- HTML ------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _cell(agg: dict[str, Any]) -> str:
    sd = f" <span class='sd'>± {agg['sd']:.3f}</span>" if agg.get("sd") is not None else ""
    return _num(agg.get("mean")) + sd


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m {s % 60:02d}s"


class _Figures:
    """Turns figures into divs; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, fig: go.Figure) -> str:
        div = pio.to_html(fig, full_html=False, include_plotlyjs=self.first,
                          config={"displaylogo": False, "responsive": True})
        self.first = False
        return f"<div>{div}</div>"


def settings_table(settings: dict[str, Any], columns: int = 3) -> str:
    items = sorted(settings.items())
    rows = (len(items) + columns - 1) // columns
    body = []
    for r in range(rows):
        cells = []
        for c in range(columns):
            i = c * rows + r
            if i < len(items):
                k, v = items[i]
                cells.append(f"<th>{_e(k)}</th><td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table class='settings'>" + "".join(body) + "</table>"


def metrics_table(summary: dict[str, Any]) -> str:
    """Rows: metrics; columns: recipes; cells: start → end, mean ± sd over seeds."""
    recipes = list(summary["aggregates"])
    if not recipes:
        return "<p>No run finished, so there is nothing to aggregate.</p>"
    head = "<tr><th>metric</th>" + "".join(
        f"<th style='color:{_color(r) or '#222'}'>{_e(r)} "
        f"<span class='sd'>(n = {summary['aggregates'][r]['accuracy']['end']['n']})</span></th>"
        for r in recipes) + "</tr>"
    rows = []
    for m in summary["metrics"]:
        if m.get("table", "main") != "main":  # shown in its own section
            continue
        cells = []
        for r in recipes:
            agg = summary["aggregates"][r][m["key"]]
            cells.append(f"<td class='num'>{_cell(agg['start'])} → <b>{_cell(agg['end'])}</b>"
                         "</td>")
        rows.append(f"<tr><th>{_e(m['label'])}</th>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def recalibration_table(summary: dict[str, Any]) -> str:
    """Per recipe two rows at the end of training, mean ± sd over seeds: the raw signals on
    the measuring half of the held-out prompts, then the same after post-hoc recalibration
    (fitted on the other half); ECE and AUROC per signal. Empty when the runs never logged
    recalibration."""
    recipes = [r for r in summary["aggregates"]
               if raw_half(SIGNALS[0]) + "/ece" in summary["aggregates"][r]]
    if not recipes:
        return ""
    head = "<tr><th></th>" + "".join(
        f"<th>{_e(SIGNAL_WORDS[s])} ECE ↓</th><th>{_e(SIGNAL_WORDS[s])} AUROC</th>"
        for s in SIGNALS) + "</tr>"
    rows = []
    for r in recipes:
        agg = summary["aggregates"][r]
        for name, entry in ((f"{r}", raw_half), (f"{r} + post-hoc", recalibrated)):
            cells = "".join(f"<td class='num'>{_cell(agg[f'{entry(s)}/{f}']['end'])}</td>"
                            for s in SIGNALS for f in ("ece", "auroc"))
            bold = name in (POSTHOC_ARM, "rlcr")  # the claim's comparison
            label = f"<b>{_e(name)}</b>" if bold else _e(name)
            rows.append(f"<tr><th style='color:{_color(r) or '#222'}'>{label}</th>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def targets_html(targets: Sequence[dict[str, Any]]) -> str:
    out = []
    for t in targets:
        color = STATUS_COLORS.get(t["status"], "#7f7f7f")
        checks = "".join(
            f"<tr><td>{'✓' if c['passed'] else '–' if c['passed'] is None else '✗'}</td>"
            f"<td>{_e(c['label'])}</td><td class='num'>{_e(c['measured'])}</td></tr>"
            for c in t["checks"])
        table = (f"<table><tr><th></th><th>check</th><th>measured (mean over seeds)</th></tr>"
                 f"{checks}</table>") if checks else ""
        note = f"<p class='note'>{_e(t['note'])}</p>" if t.get("note") else ""
        out.append(f"<h3><span class='badge' style='background:{color}'>{_e(t['status'])}"
                   f"</span> {_e(t['title'])}</h3>{table}{note}")
    return "".join(out)


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(r['id'] or '—')}</td><td>{_e(r['recipe'])}"
        + (f" · judge {_e(r['judge'])}" if r.get("judge") else "")
        + f"</td><td>{_e(r['seed'])}</td>"
        f"<td>{_e(r['status'])}</td><td class='num'>{_num(r['start'].get('accuracy'))} → "
        f"{_num(r['end'].get('accuracy'))}</td><td>{_e(r.get('error') or '')}</td></tr>"
        for r in runs)
    return ("<table><tr><th>run id</th><th>recipe</th><th>seed</th><th>status</th>"
            f"<th>accuracy start → end</th><th>error</th></tr>{rows}</table>")


def _provenance(summary: dict[str, Any]) -> str:
    """Where the settings came from: the experiment's settings and any overrides."""
    def kv(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} = {v!r}" for k, v in d.items()) or "none"

    if "experiment_settings" not in summary:
        return ""
    return (f"<p>The experiment's settings: <code>{_e(kv(summary['experiment_settings']))}"
            f"</code>. Overridden for this experiment: <code>"
            f"{_e(kv(summary.get('overrides', {})))}</code>. Threads per run = cores ÷ the "
            "experiment's runs that may train at once.</p>")


def _settings_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    differ = ("the seed and each arm's own settings (listed with the judges)"
              if summary.get("variants") else
              "the recipe, the seed and a chained arm's starting point")
    return ["<h2>Settings</h2><p>One set of settings for every arm; only "
            f"{differ} differ between runs.</p>",
            _provenance(summary), settings_table(summary["settings"])]


def _targets_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    return ["<h2>Targets</h2><p>Fixed thresholds checked against the measured means over "
            "seeds; the settings are the same for every recipe and are not tuned to pass.</p>",
            targets_html(summary["targets"])]


def _metrics_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    return ["<h2>Start → end, mean ± sd over seeds</h2>",
            f"<p>Start = step 0 (the embedded model before training), end = the final "
            f"evaluation. Pass@k at the largest k evaluated, k = {summary['pass_k_max']}.</p>",
            metrics_table(summary)]


def _curves_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    return ["<h2>Over training</h2><p>Each line is a recipe's mean over its finished seeds at "
            "every evaluation. Overconfidence = mean confidence − accuracy.</p>"
            "<div class='grid'>",
            *(fig(curve_figure(summary, key, t, yr)) for key, t, yr in CURVES), "</div>"]


def _reliability_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    return ["<h2>Final reliability diagrams</h2><p>Accuracy against mean confidence per bin, "
            "pooled over seeds; a calibrated model follows the diagonal. Marker size grows "
            "with the bin's share of samples.</p><div class='grid'>",
            *(fig(reliability_figure(summary, r)) for r in summary["aggregates"]), "</div>"]


def _histograms_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    parts = ["<h2>Verbalized confidence histograms: start vs end</h2>"
             "<p>Samples per confidence bin, correct and wrong stacked, pooled over seeds.</p>"]
    for r in summary["aggregates"]:
        parts += ["<div class='pair'>", fig(histogram_figure(summary, r, "start")),
                  fig(histogram_figure(summary, r, "end")), "</div>"]
    return parts


def _claim_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    """What the literature reports, and whether this machine's runs held it."""
    if not summary.get("claim"):
        return []
    judged = [t for t in summary["targets"] if t["status"] in ("PASS", "FAIL")]
    held = sum(t["status"] == "PASS" for t in judged)
    verdict = (f"{held} of {len(judged)} targets held"
               + (": the claim held." if judged and held == len(judged) else
                  ": the claim did not hold in full (see Targets)." if judged else "."))
    chains = "".join(f"<p>The arm <b>{_e(a)}</b> is {_e(c['recipe'])} started from the end "
                     f"of the same seed's {_e(c['after'])} run (<code>init_from</code>).</p>"
                     for a, c in (summary.get("chains") or {}).items())
    return [f"<h2>The claim</h2><p><b>Literature</b> ({_e(summary.get('source', ''))}): "
            f"{_e(summary['claim'])}</p><p><b>This machine</b>: {_e(verdict)}</p>{chains}"]


def spread_figure(summary: dict[str, Any]) -> go.Figure:
    """Pass@k against k at the final evaluation, mean over seeds, one line per recipe, with
    the start (every recipe's step 0 is the same model) dashed in grey."""
    items = []
    first = next(iter(summary["aggregates"]), None)
    if first is not None:
        items.append(("start (step 0)", summary["pass_curve"][first]["start"], "#999999",
                      "dash"))
    items += [(r, summary["pass_curve"][r]["end"], _color(r), "solid")
              for r in summary["aggregates"]]
    return charts.pass_at_k(items, "Pass@k at the end, mean over seeds")


def _spread_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    parts = ["<h2>Coverage and spread</h2><p>Pass@k over the whole k range at the end, and "
             "two measures of how spread out the samples are, over training: the mean "
             "per-token entropy of the policy (nats) and the number of distinct answers "
             "among a prompt's n samples.</p><div class='grid'>"]
    if summary.get("pass_curve"):
        parts.append(fig(spread_figure(summary)))
    parts += [fig(curve_figure(summary, "entropy", "Token entropy (nats)", None)),
              fig(curve_figure(summary, "distinct_answers", "Distinct answers per prompt",
                               None)), "</div>"]
    return parts


def monitor_figure(summary: dict[str, Any], arm: str) -> go.Figure:
    """The run's own training reward beside held-out accuracy over training."""
    m = summary["monitor"][arm]
    return charts.reward_and_accuracy(m["step"], m["reward"], m["accuracy"],
                                      f"{arm}: reward against accuracy")


def _monitor_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    arms = list(summary.get("monitor", {}))
    return ["<h2>Reward-hacking monitor</h2><p>Each run's own training reward (for rlsf: the "
            "mean answer-span confidence of its samples, which needs no labels) beside its "
            "held-out accuracy, mean over seeds. A reward that climbs while accuracy falls is "
            "the model learning to be confident rather than right.</p><div class='grid'>",
            *(fig(monitor_figure(summary, a)) for a in arms), "</div>"]


def recalibration_figure(summary: dict[str, Any], signal: str) -> go.Figure:
    """Per recipe, the signal's end ECE and AUROC (mean over seeds) on the measuring half:
    raw (hollow) to post-hoc (filled). A monotone map moves a recipe left, not up."""
    def point(agg: dict[str, Any], entry: str) -> tuple[Any, Any]:
        ece, auroc = ((agg.get(f"{entry}/{f}") or {}).get("end", {}).get("mean")
                      for f in ("ece", "auroc"))
        return ece, auroc

    items = [(r, point(agg, raw_half(signal)), point(agg, recalibrated(signal)), _color(r))
             for r, agg in summary["aggregates"].items()]
    return charts.before_after(items, f"{SIGNAL_WORDS[signal]}: raw → post-hoc",
                               "ECE ↓", "AUROC (0.5 = blind)", ("raw", "post-hoc"))


def _recalibration_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    table = recalibration_table(summary)
    if not table:
        return []
    return ["<h2>After post-hoc recalibration</h2><p>At every evaluation each confidence "
            "signal gets a monotone (isotonic) map, fitted on the samples of one half of the "
            "held-out prompts (a fixed split by a hash of the question text) and applied to "
            "the other half. Both rows of a recipe are measured on that second half, so they "
            "compare the same samples; the main table's figures cover every prompt. The map "
            "needs only labelled held-out answers, no training change: it can fix the numbers "
            "(ECE) but, being monotone, cannot teach confidence to tell right from wrong "
            "(AUROC).</p>", table,
            "<div class='grid'>", *(fig(recalibration_figure(summary, s)) for s in SIGNALS),
            "</div>"]


def judges_table(summary: dict[str, Any]) -> str:
    """Rows: arms; cells: held-out true accuracy start → end, then the judge on the training
    batches, first → last steps; mean ± sd over seeds."""
    judges = summary.get("judges") or {}
    cols = [("judged accuracy (reward)", "judged_accuracy"), ("true accuracy (train)",
            "true_accuracy"), ("gap judged − true", "gap"), ("agreement", "agreement"),
            ("Youden's J", "youden_j"), ("TPR", "tpr"), ("FPR", "fpr")]
    head = "".join(f"<th>{_e(label)}</th>" for label, _ in cols)
    rows = "".join(
        f"<tr><td>{_e(arm)}</td><td class='num'>"
        f"{_ends(summary['aggregates'].get(arm, {}).get('accuracy', _NONE))}</td>"
        + "".join(f"<td class='num'>{_ends(j.get(key, _NONE))}</td>" for _, key in cols)
        + "</tr>" for arm, j in judges.items())
    return (f"<table><tr><th>judge</th><th>held-out true accuracy</th>{head}</tr>{rows}"
            "</table>")


_NONE = {"start": {"mean": None, "sd": None}, "end": {"mean": None, "sd": None}}


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in values.items())


def _ends(agg: dict[str, Any]) -> str:
    return f"{_cell(agg['start'])} → {_cell(agg['end'])}"


def _judges_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    judges = summary.get("judges") or {}
    settings = "".join(f"<li><b>{_e(arm)}</b>: <code>{_e(_pairs(values))}</code></li>"
                       for arm, values in (summary.get("variants") or {}).items())
    return ["<h2>Judges: verdict beside truth</h2><p>Each arm trains the same recipe on its "
            "judge's verdicts; the exact grader's truth is logged beside them on every "
            "training batch, and every evaluation reports truth only. Training-batch figures "
            "are means over each run's first and last 10 steps (the first are the start "
            "model's samples: the agreement the imperfect judges were matched on), then over "
            f"seeds, start → end.</p><ul>{settings}</ul>", judges_table(summary),
            "<div class='grid'>",
            *(fig(charts.judged_vs_true((j["curve"]["step"], j["curve"]["judged_accuracy"]),
                                        (j["curve"]["step"], j["curve"]["true_accuracy"]),
                                        f"{arm}: judged vs true accuracy (training)"))
              for arm, j in judges.items()), "</div>"]


CONSISTENCY_COLUMNS = (("repeatability", "repeatability"), ("omega", "ω"), ("alpha", "α"),
                       ("single_draw_r", "r between two draws"), ("accuracy", "accuracy"),
                       ("ece", "verb. ECE"))


def consistency_table(means: Sequence[dict[str, Any]]) -> str:
    """Per model and temperature, mean ± sd over seeds of every consistency measure."""
    head = "".join(f"<th>{_e(label)}</th>" for _, label in CONSISTENCY_COLUMNS)
    rows = "".join(f"<tr><td>{_e(r['recipe'])}</td><td class='num'>{r['temperature']:g}</td>"
                   + "".join(f"<td class='num'>{_cell(r.get(k) or {})}</td>"
                             for k, _ in CONSISTENCY_COLUMNS) + "</tr>" for r in means)
    return f"<table><tr><th>model</th><th>T</th>{head}</tr>{rows}</table>"


def _consistency_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    info = summary.get("consistency") or {}
    plan = info.get("plan") or {}
    means = summary.get("table_means") or []
    found = summary.get("batch_determinism") or {}
    determinism = ("not measured" if not found else
                   "identical for every model" if found.get("identical") else
                   "<b>not identical</b> for some model (see Targets)")
    parts = ["<h2>Consistency against temperature</h2>",
             f"<p>Each of {plan.get('questions', '?')} held-out questions answered "
             f"{plan.get('repetitions', '?')} times at every temperature, by the start model "
             "and each run's end model; repetition r of seed s samples with seed "
             f"{_e(info.get('repetition_seed') or '?')}, each question from its own stream "
             "of that seed. T = 0 is greedy decoding. Repeatability = share of questions "
             "whose outputs were all identical; ω (McDonald, one factor) and α (Cronbach) "
             "treat the repetitions as items and the questions as subjects, over 0/1 "
             "correctness; empty where undefined (a repetition right on every question or "
             "wrong on every one). ω and α measure the sum of all the repetitions, so they "
             "grow with their number; the mean correlation between two repetitions is the "
             "reliability of one answer. Verbalized ECE over every answer. Mean ± sd over "
             "seeds.</p>",
             f"<p>Greedy outputs across generation batch sizes: {determinism}. Measuring "
             f"took {info.get('wall_seconds', '?')} s wall, {info.get('cpu_seconds', '?')} s "
             f"CPU on {info.get('threads', '?')} thread(s), in its own process beside the "
             "training queue."
             + (f" <b>Measurement problem</b>: {_e(info['error'])}." if info.get("error")
                else "") + "</p>"]
    if means:
        omega, accuracy, single = charts.consistency_vs_temperature(means)
        parts += ["<div class='pair'>", fig(omega), fig(accuracy), "</div><div class='pair'>",
                  fig(single), "<div></div></div>", consistency_table(means)]
    return parts


def _runs_section(summary: dict[str, Any], fig: _Figures) -> list[str]:
    return ["<h2>Runs</h2>", runs_table(summary["runs"])]


# Section name -> its HTML; an experiment lists the ones it shows (core.experiments.registry).
SECTIONS = {"claim": _claim_section, "settings": _settings_section, "judges": _judges_section,
            "targets": _targets_section, "metrics": _metrics_section,
            "spread": _spread_section, "monitor": _monitor_section, "curves": _curves_section,
            "recalibration": _recalibration_section,
            "reliability": _reliability_section, "histograms": _histograms_section,
            "consistency": _consistency_section, "runs": _runs_section}
# Nothing to draw without finished runs.
NEED_FINISHED_RUNS = ("spread", "monitor", "curves", "recalibration", "reliability",
                      "histograms", "judges")


def render_report(summary: dict[str, Any], title: str,
                  sections: Sequence[str] | None = None) -> str:
    """The whole report as one self-contained HTML page: the heading, then `sections` in
    order (None: every section)."""
    fig = _Figures()
    n_failed = sum(r["status"] != "finished" for r in summary["runs"])
    title = f"{title} — task {summary['task']}"
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='question'><b>The question.</b> {_e(summary['question'])}</p>",
        f"<p>Recipes {_e(', '.join(summary['recipes']))}; seeds "
        f"{_e(', '.join(map(str, summary['seeds'])))}; {len(summary['runs'])} runs, "
        f"{n_failed} not finished. Wall time {_clock(summary['wall_seconds'])} "
        f"({summary['wall_seconds']:.0f} s)."
        + (" <b>Interrupted</b>: some runs were stopped early." if summary.get("interrupted")
           else "") + (f" Written {_e(summary['created_at'])}." if summary.get("created_at")
                       else "") + "</p>",
    ]
    for name in SECTIONS if sections is None else sections:
        if name in NEED_FINISHED_RUNS and not summary["aggregates"]:
            continue
        parts += SECTIONS[name](summary, fig)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            + "".join(parts) + "</body></html>")
