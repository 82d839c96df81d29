"""A sweep's report: each main end metric against each swept field (mean ± sd over seeds),
curves over training per setting, and the runs. A pure function of summary.json (see
`core.experiments.sweep.build_sweep_summary`); charts come from `core.charts`, page parts
from `core.experiments.report`.
"""

from __future__ import annotations

from typing import Any

from core import charts
from core.experiments.report import CSS, _clock, _e, _Figures, _num, settings_table

MAIN_METRICS = charts.SWEEP_METRICS
CURVE_METRICS = ("accuracy", "verbalized/ece")


def settings_table_html(summary: dict[str, Any]) -> str:
    """One row per setting: n finished seeds and each main end metric, mean ± sd."""
    head = "".join(f"<th>{_e(f)}</th>" for f in summary["fields"]) + "<th>n</th>" + "".join(
        f"<th>{_e(charts.metric_label(summary, k))}</th>" for k in MAIN_METRICS)
    rows = []
    for s in summary["by_setting"]:
        cells = "".join(f"<td>{_e(s['params'][f])}</td>" for f in summary["fields"])
        cells += f"<td class='num'>{s['n']}</td>"
        for k in MAIN_METRICS:
            agg = s["end"][k]
            sd = f" <span class='sd'>± {agg['sd']:.3f}</span>" if agg["sd"] is not None else ""
            cells += f"<td class='num'>{_num(agg['mean'])}{sd}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def runs_table_html(summary: dict[str, Any]) -> str:
    head = ("<tr><th>run id</th>" + "".join(f"<th>{_e(f)}</th>" for f in summary["fields"])
            + "<th>seed</th><th>status</th><th>accuracy start → end</th><th>error</th></tr>")
    rows = "".join(
        f"<tr><td>{_e(r['id'] or '—')}</td>"
        + "".join(f"<td>{_e(r['params'][f])}</td>" for f in summary["fields"])
        + f"<td>{r['seed']}</td><td>{_e(r['status'])}</td><td class='num'>"
        f"{_num(r['start'].get('accuracy'))} → {_num(r['end'].get('accuracy'))}</td>"
        f"<td>{_e(r.get('error') or '')}</td></tr>" for r in summary["runs"])
    return f"<table>{head}{rows}</table>"


def render_sweep_report(summary: dict[str, Any]) -> str:
    """The sweep's report as one self-contained HTML page."""
    fig = _Figures()
    title = f"Sweep {summary['sweep']} — task {summary['task']}"
    n_done = sum(r["status"] == "finished" for r in summary["runs"])
    grid = "; ".join(f"{f} ∈ {{{', '.join(map(str, v))}}}" for f, v in summary["grid"].items())
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p>Grid: {_e(grid)}; seeds {_e(', '.join(map(str, summary['seeds'])))}. "
             f"{len(summary['runs'])} runs on the {_e(summary['backend'])} backend, {n_done} "
             f"finished. Wall time {_clock(summary['wall_seconds'])} "
             f"({summary['wall_seconds']:.0f} s)."
             + (" <b>Interrupted</b>: some runs were stopped early."
                if summary.get("interrupted") else "") + "</p>"]
    if any(s["n"] for s in summary["by_setting"]):
        parts += ["<h2>End metrics against each swept field</h2><p>Mean over the finished "
                  "seeds of each setting, the band ± one sd (none with a single seed).</p>"
                  "<div class='grid'>",
                  *(fig(charts.sweep_effect(summary, m, f)) for f in summary["fields"]
                    for m in MAIN_METRICS), "</div>",
                  "<h2>Per setting, mean ± sd over seeds</h2>", settings_table_html(summary),
                  "<h2>Over training</h2><div class='grid'>",
                  *(fig(charts.sweep_curves(summary, m)) for m in CURVE_METRICS), "</div>"]
    else:
        parts.append("<p>No run finished, so there is nothing to aggregate.</p>")
    parts += ["<h2>Shared settings</h2>", settings_table(summary["settings"]),
              "<h2>Runs</h2>", runs_table_html(summary)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            + "".join(parts) + "</body></html>")
