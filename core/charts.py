"""Every chart of the app, in one place: plain functions from run data to Plotly figures.

Pages never build figures themselves; they call these. Inputs are the store's shapes
(train rows, eval entries) or simple (name, x, y) series, so any page can reuse a chart.
Missing values (None) are skipped, never plotted as zero.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

HEIGHT = 360
RECIPE_COLORS = {"binary": "#d62728", "rlcr": "#2ca02c", "psr": "#1f77b4", "nsr": "#9467bd",
                 "w-reinforce": "#ff7f0e", "rlsf": "#8c564b"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
CORRECT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"
DASHES = ("solid", "dash", "dot", "dashdot")


@dataclass(frozen=True)
class Series:
    name: str
    x: Sequence[Any]
    y: Sequence[Any]
    color: str | None = None
    dash: str = "solid"
    mode: str = "lines+markers"


def colors_for(names: Sequence[str], recipes: Sequence[str | None]) -> list[str]:
    """One color per run: the recipe's color, or the palette once a recipe repeats."""
    if len(set(recipes)) == len(recipes) and all(r in RECIPE_COLORS for r in recipes):
        return [RECIPE_COLORS[r] for r in recipes]  # type: ignore[index]
    return [PALETTE[i % len(PALETTE)] for i in range(len(names))]


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str,
            y_range: Sequence[float] | None = None, height: int = HEIGHT) -> go.Figure:
    # Title on top, legend under the x axis: long legends never cover the title.
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=height,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
                      hovermode="closest")
    fig.update_xaxes(title_text=x_title, title_standoff=4)
    fig.update_yaxes(title_text=y_title)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    return fig


def _clean(x: Sequence[Any], y: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    pts = [(a, b) for a, b in zip(x, y, strict=False)
           if a is not None and isinstance(b, int | float) and not isinstance(b, bool)]
    return [a for a, _ in pts], [b for _, b in pts]


def lines(series: Sequence[Series], title: str, x_title: str = "step", y_title: str = "",
          y_range: Sequence[float] | None = None) -> go.Figure:
    """Any metric over steps, one line per series (runs, or metrics of one run)."""
    fig = go.Figure()
    xs: list[Any] = []
    for s in series:
        x, y = _clean(s.x, s.y)
        xs += x
        fig.add_trace(go.Scatter(x=x, y=y, name=s.name, mode=s.mode,
                                 line={"color": s.color, "dash": s.dash}, marker={"size": 6}))
    fig = _layout(fig, title, x_title, y_title, y_range)
    if xs and all(isinstance(v, int) for v in xs) and max(xs) - min(xs) <= 10:
        fig.update_xaxes(dtick=1)  # a short run: whole steps only, no "step 0.5"
    return fig


def column(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[Any], list[Any]]:
    """(steps, values) of one flat key in train rows or a nested 'a/b' key in eval entries."""
    xs, ys = [], []
    for r in rows:
        v: Any = r
        for part in key.split("/") if key not in r else [key]:
            v = v.get(part) if isinstance(v, dict) else None
        xs.append(r.get("step"))
        ys.append(v)
    return _clean(xs, ys)


def reward(train: Sequence[dict[str, Any]]) -> go.Figure:
    """Mean training reward per step (the recipe's own signal)."""
    x, y = column(train, "reward/mean")
    return lines([Series("mean reward", x, y, "#1f77b4", mode="lines")],
                 "Reward on training batches", y_title="reward")


def accuracy(train: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]]) -> go.Figure:
    """Training-batch accuracy per step, and held-out sampled and greedy accuracy."""
    series = [Series("train batch (sampled)", *column(train, "accuracy"), "#aec7e8",
                     mode="lines"),
              Series("held-out, sampled (Pass@1)", *column(evals, "accuracy"), "#1f77b4"),
              Series("held-out, greedy (T = 0)", *column(evals, "greedy_accuracy"), "#ff7f0e",
                     dash="dash")]
    return lines(series, "Accuracy", y_title="accuracy", y_range=(0, 1.02))


JUDGED_COLOR, TRUE_COLOR = "#ff7f0e", "#1f77b4"


def judged_vs_true(judged: tuple[Sequence[Any], Sequence[Any]],
                   true: tuple[Sequence[Any], Sequence[Any]],
                   title: str = "Judged vs true accuracy on training batches") -> go.Figure:
    """What the judge accepted (the reward the recipe saw) beside what the exact grader
    accepts on the same training samples, each as (steps, values): a gap that widens is the
    policy learning the judge's errors (reward hacking)."""
    return lines([Series("judged (the recipe's verdict)", *judged, JUDGED_COLOR, mode="lines"),
                  Series("true (exact grader)", *true, TRUE_COLOR, mode="lines")],
                 title, y_title="accuracy", y_range=(0, 1.02))


def judged_vs_true_run(train: Sequence[dict[str, Any]]) -> go.Figure:
    """judged_vs_true from one run's training rows (its `judge/…` keys)."""
    return judged_vs_true(column(train, "judge/judged_accuracy"),
                          column(train, "judge/true_accuracy"))


def truncation(train: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]]) -> go.Figure:
    """Share of completions cut at max_new_tokens before they ended, in training batches and
    in evaluation: near 1, completions end before their tags and carry no signal."""
    series = [Series("train batch", *column(train, "truncation_rate"), "#aec7e8", mode="lines"),
              Series("held-out, sampled", *column(evals, "truncation_rate"), "#1f77b4")]
    return lines(series, "Truncated completions (hit max_new_tokens)", y_title="share",
                 y_range=(0, 1.02))


def _bin_labels(n: int) -> list[str]:
    return [f"{i / n:.1f}–{(i + 1) / n:.1f}" for i in range(n)]


def confidence_histogram(ev: dict[str, Any] | None, signal: str, label: str = "") -> go.Figure:
    """Counts per confidence bin at one evaluation, correct and wrong stacked."""
    cal = ((ev or {}).get("calibration") or {}).get(signal) or {}
    right = list(cal.get("hist_correct") or [])
    wrong = list(cal.get("hist_incorrect") or [])
    n = max(len(right), len(wrong), 10)
    right += [0] * (n - len(right))
    wrong += [0] * (n - len(wrong))
    labels = _bin_labels(n)
    fig = go.Figure([go.Bar(x=labels, y=right, name="correct", marker_color=CORRECT_COLOR),
                     go.Bar(x=labels, y=wrong, name="wrong", marker_color=WRONG_COLOR)])
    fig.update_layout(barmode="stack", bargap=0.05)
    step = (ev or {}).get("step", "?")
    return _layout(fig, f"Confidence histogram at step {step}{label}", "confidence",
                   "samples")


def reliability(items: Sequence[tuple[str, dict[str, Any] | None, str | None]],
                signal: str, title: str = "Reliability diagram") -> go.Figure:
    """Accuracy against mean confidence per bin, for one or more evaluations, with the
    diagonal a calibrated model would follow. Marker size grows with the bin's count."""
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                                line={"color": "#999999", "dash": "dash"})])
    for name, ev, color in items:
        cal = ((ev or {}).get("calibration") or {}).get(signal) or {}
        bins = [b for b in cal.get("reliability") or []
                if isinstance(b, dict) and b.get("count") and b.get("confidence") is not None
                and b.get("accuracy") is not None]
        total = sum(b["count"] for b in bins) or 1
        ece = cal.get("ece")
        label = f"{name} (ECE {ece:.2f})" if isinstance(ece, int | float) else name
        fig.add_trace(go.Scatter(
            x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], name=label,
            mode="lines+markers", line={"color": color},
            marker={"size": [6 + 24 * (b["count"] / total) ** 0.5 for b in bins]},
            customdata=[b["count"] for b in bins],
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} "
                          "samples<extra></extra>"))
    fig = _layout(fig, title, "mean confidence in bin", "accuracy in bin", (0, 1.02))
    fig.update_xaxes(range=[0, 1.02])
    return fig


def pass_at_k(items: Sequence[tuple[str, dict[str, Any] | None, str | None, str]],
              title: str = "Pass@k") -> go.Figure:
    """Pass@k against k on a log2 axis; items are (name, pass_at_k dict, color, dash)."""
    fig = go.Figure()
    ks: set[int] = set()
    for name, pk, color, dash in items:
        pts = sorted((int(k), v) for k, v in (pk or {}).items()
                     if str(k).isdigit() and isinstance(v, int | float))
        ks.update(k for k, _ in pts)
        fig.add_trace(go.Scatter(x=[k for k, _ in pts], y=[v for _, v in pts], name=name,
                                 mode="lines+markers", line={"color": color, "dash": dash}))
    fig = _layout(fig, title, "k (log2 scale)", "Pass@k", (0, 1.02))
    ticks = sorted(ks) or [1]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(k) for k in ticks])
    return fig


def calibration_over_steps(evals: Sequence[dict[str, Any]], signal: str) -> go.Figure:
    """ECE, Brier and AUROC of one confidence signal at every evaluation."""
    base = f"calibration/{signal}/"
    series = [Series("ECE ↓", *column(evals, base + "ece"), "#d62728"),
              Series("Brier ↓", *column(evals, base + "brier"), "#ff7f0e", dash="dash"),
              Series("AUROC (0.5 = blind)", *column(evals, base + "auroc"), "#1f77b4",
                     dash="dot")]
    return lines(series, "ECE, Brier and AUROC over training", y_range=(0, 1.02))


def before_after(items: Sequence[tuple[str, tuple[Any, Any], tuple[Any, Any], str | None]],
                 title: str, x_title: str, y_title: str,
                 labels: tuple[str, str] = ("before", "after")) -> go.Figure:
    """Each item (name, (x, y) before, (x, y) after, color) as an arrow: a hollow marker
    before, a filled one after. Items with a missing coordinate are skipped. Drawn for
    post-hoc recalibration: ECE against AUROC, raw and recalibrated, with AUROC 0.5 dotted
    (a blind signal)."""
    fig = go.Figure()
    for name, a, b, color in items:
        if any(not isinstance(v, int | float) for v in (*a, *b)):
            continue
        fig.add_trace(go.Scatter(
            x=[a[0], b[0]], y=[a[1], b[1]], name=name, mode="lines+markers",
            line={"color": color}, marker={"size": [9, 11], "symbol": ["circle-open",
                                                                          "circle"]},
            customdata=list(labels),
            hovertemplate="%{customdata}: %{x:.3f}, %{y:.3f}<extra>" + name + "</extra>"))
    fig = _layout(fig, title, x_title, y_title, (0.3, 1.02))
    fig.add_hline(y=0.5, line={"color": "#999999", "dash": "dot", "width": 1})
    fig.update_xaxes(rangemode="tozero")
    return fig


def spread(evals: Sequence[dict[str, Any]]) -> go.Figure:
    """How spread out the held-out samples are: mean token entropy of the policy (left axis)
    and distinct answers per prompt (right axis). A recipe that concentrates mass lowers both
    (Zhu et al. 2025: PSR's entropy collapses, NSR's stays near the start)."""
    fig = go.Figure()
    x, y = column(evals, "entropy")
    fig.add_trace(go.Scatter(x=x, y=y, name="token entropy (nats)", mode="lines+markers",
                             line={"color": "#1f77b4"}))
    x, y = column(evals, "distinct_answers")
    fig.add_trace(go.Scatter(x=x, y=y, name="distinct answers per prompt", yaxis="y2",
                             mode="lines+markers", line={"color": "#ff7f0e", "dash": "dash"}))
    fig = _layout(fig, "Spread of the held-out samples", "step", "entropy (nats)")
    fig.update_layout(yaxis2={"title": {"text": "distinct answers"}, "overlaying": "y",
                              "side": "right", "rangemode": "tozero"})
    fig.update_yaxes(rangemode="tozero", selector={"title": {"text": "entropy (nats)"}})
    return fig


def reward_and_accuracy(steps: Sequence[Any], reward: Sequence[Any], accuracy: Sequence[Any],
                        title: str) -> go.Figure:
    """A run's training reward (left axis) and its held-out accuracy (right axis) over
    steps: a reward that climbs while accuracy falls is reward hacking."""
    fig = go.Figure()
    x, y = _clean(steps, reward)
    fig.add_trace(go.Scatter(x=x, y=y, name="training reward", mode="lines+markers",
                             line={"color": "#8c564b"}))
    x, y = _clean(steps, accuracy)
    fig.add_trace(go.Scatter(x=x, y=y, name="held-out accuracy", yaxis="y2",
                             mode="lines+markers", line={"color": "#1f77b4", "dash": "dash"}))
    fig = _layout(fig, title, "step", "reward")
    fig.update_layout(yaxis2={"title": {"text": "accuracy"}, "overlaying": "y",
                              "side": "right", "range": [0, 1.02]})
    return fig


@dataclass(frozen=True)
class MeanSd:
    """A series of means with their sd over seeds (sd None: a single seed, no band)."""
    name: str
    x: Sequence[Any]
    mean: Sequence[float | None]
    sd: Sequence[float | None]
    color: str | None = None


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    return f"rgba({int(c[0:2], 16)},{int(c[2:4], 16)},{int(c[4:6], 16)},{alpha})"


def mean_sd_lines(series: Sequence[MeanSd], title: str, x_title: str = "step",
                  y_title: str = "", y_range: Sequence[float] | None = None,
                  log_x: bool = False) -> go.Figure:
    """Means over seeds as lines, with a shaded mean ± sd band where there is an sd: a
    sweep's end metric against a swept value, or a setting's curve over steps."""
    fig = go.Figure()
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = [(x, m, sd) for x, m, sd in zip(s.x, s.mean, s.sd, strict=False)
               if x is not None and isinstance(m, int | float)]
        xs = [p[0] for p in pts]
        band = [(x, m, sd) for x, m, sd in pts if isinstance(sd, int | float)]
        if band:
            fig.add_trace(go.Scatter(
                x=[p[0] for p in band] + [p[0] for p in reversed(band)],
                y=[p[1] + p[2] for p in band] + [p[1] - p[2] for p in reversed(band)],
                fill="toself", fillcolor=_rgba(color, 0.18), line={"width": 0}, mode="lines",
                hoverinfo="skip", showlegend=False, legendgroup=s.name))
        fig.add_trace(go.Scatter(
            x=xs, y=[p[1] for p in pts], name=s.name, mode="lines+markers",
            line={"color": color}, marker={"size": 7}, legendgroup=s.name,
            customdata=[p[2] if p[2] is not None else float("nan") for p in pts],
            hovertemplate="%{x}: %{y:.3f} ± %{customdata:.3f}<extra>" + s.name + "</extra>"))
    fig = _layout(fig, title, x_title, y_title, y_range)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


CONSISTENCY_PANELS = (("omega", "McDonald's ω of the repetitions"),
                      ("accuracy", "Accuracy of the repetitions"),
                      ("single_draw_r", "Correlation between two repetitions"))


def consistency_vs_temperature(means: Sequence[dict[str, Any]]) -> list[go.Figure]:
    """Omega, accuracy and the correlation between two repetitions against temperature, one
    line per model (mean ± sd over seeds); the first two are meant side by side: a model can
    be perfectly consistent (ω = 1 at T = 0) and often wrong. The third shows what ω over
    100 repetitions hides: how far one answer predicts another. `means`: rows {recipe,
    temperature, METRIC: {mean, sd}}; a metric a row lacks (an older summary) is not drawn."""
    names = list(dict.fromkeys(r["recipe"] for r in means))
    figures = []
    for key, title in CONSISTENCY_PANELS:
        series = []
        for i, name in enumerate(names):
            rows = sorted((r for r in means if r["recipe"] == name),
                          key=lambda r: r["temperature"])
            series.append(MeanSd(name, [r["temperature"] for r in rows],
                                 [(r.get(key) or {}).get("mean") for r in rows],
                                 [(r.get(key) or {}).get("sd") for r in rows],
                                 RECIPE_COLORS.get(name) or PALETTE[i % len(PALETTE)]))
        figures.append(mean_sd_lines(series, title, "temperature", key,
                                     (-0.02 if key == "single_draw_r" else 0, 1.02)))
    return figures


# --- sweeps: figures from a sweep summary (core.experiments.sweep.build_sweep_summary) -----
SWEEP_METRICS = ("accuracy", "verbalized/ece", "verbalized/auroc", "answer_prob/ece")
STATE_COLORS = {"planned": "#dddddd", "queued": "#9467bd", "running": "#1f77b4",
                "finished": "#2ca02c", "failed": "#d62728", "stopped": "#7f7f7f",
                "damaged": "#ff7f0e"}


def metric_label(summary: dict[str, Any], key: str) -> str:
    return next((m["label"] for m in summary["metrics"] if m["key"] == key), key)


def _is_log(values: list[Any]) -> bool:
    """A numeric field spanning a factor of 10 or more (learning rates) reads best on log x."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return len(nums) == len(values) > 1 and min(nums) > 0 and max(nums) / min(nums) >= 10


def _name(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in params.items()) or "all runs"


def sweep_effect(summary: dict[str, Any], metric: str, field: str) -> go.Figure:
    """`metric` at the end of training against `field`'s values: one line per combination of
    the other swept fields, mean over seeds with a ± sd band."""
    grid = summary["grid"]
    others = [f for f in summary["fields"] if f != field]
    series = []
    for combo in itertools.product(*(grid[f] for f in others)):
        fixed = dict(zip(others, combo, strict=True))
        cells = [s for s in summary["by_setting"]
                 if all(s["params"][f] == v for f, v in fixed.items())]
        order = {json.dumps(v): i for i, v in enumerate(grid[field])}
        cells.sort(key=lambda s: order[json.dumps(s["params"][field])])
        x = [c["params"][field] for c in cells]
        if not _is_log(grid[field]):
            x = [str(v) for v in x]  # a categorical axis keeps the grid's order and values
        color = RECIPE_COLORS.get(str(fixed.get("recipe"))) if "recipe" in fixed \
            else None
        series.append(MeanSd(_name(fixed), x, [c["end"][metric]["mean"] for c in cells],
                             [c["end"][metric]["sd"] for c in cells], color))
    fig = mean_sd_lines(series, f"{metric_label(summary, metric)} at the end vs {field}",
                        x_title=field, y_range=(0, 1.02), log_x=_is_log(grid[field]))
    if not _is_log(grid[field]):  # "0.001" alone would otherwise be read as a number
        fig.update_xaxes(type="category")
    return fig


def sweep_curves(summary: dict[str, Any], metric: str) -> go.Figure:
    """`metric` over training steps, one line per setting, mean ± sd over seeds."""
    series = []
    for s in summary["by_setting"]:
        c = s["curves"]
        color = RECIPE_COLORS.get(str(s["params"].get("recipe"))) \
            if len(summary["fields"]) == 1 else None
        series.append(MeanSd(_name(s["params"]), c["step"],
                             [v["mean"] for v in c.get(metric, [])],
                             [v["sd"] for v in c.get(metric, [])], color))
    return mean_sd_lines(series, f"{metric_label(summary, metric)} over training",
                         y_range=(0, 1.02))


def run_grid(cells: Sequence[tuple[str, int, str, str]], title: str = "Runs") -> go.Figure:
    """A sweep's progress: one square per run, (setting, seed, state, hover text), coloured
    by its state; settings across, seeds down."""
    fig = go.Figure()
    for state, color in STATE_COLORS.items():
        mine = [c for c in cells if c[2] == state]
        if mine:
            fig.add_trace(go.Scatter(
                x=[c[0] for c in mine], y=[f"seed {c[1]}" for c in mine], mode="markers",
                name=state, marker={"symbol": "square", "size": 26, "color": color},
                text=[c[3] for c in mine], hovertemplate="%{text}<extra></extra>"))
    fig = _layout(fig, title, "setting", "", height=140 + 40 * len({c[1] for c in cells}))
    fig.update_xaxes(type="category", categoryorder="array",
                     categoryarray=list(dict.fromkeys(c[0] for c in cells)))
    fig.update_yaxes(type="category")
    return fig
