"""Compare: runs side by side. Any metric over steps, final Pass@k and reliability, and a
start -> end summary with a CSV download. Defaults to the latest quick comparison."""

import pandas as pd
import streamlit as st

from core import api, charts
from ui import common, derived

common.page_setup("Compare")

st.title(":material/compare_arrows: Compare runs")
runs = api.list_runs()
if not runs:
    st.info("No runs yet: start the quick comparison on Home.")
    st.stop()
by_id = {r.id: r for r in runs}
groups = api.groups(runs, prefix="")


def pick_group() -> None:
    tag = st.session_state["compare_group"]
    if tag in groups:
        st.session_state["compare_runs"] = groups[tag]


# Which runs: ?runs=a,b or ?group=tag in the address, else the last choice, else the latest
# quick comparison, else the newest four runs.
if "compare_runs" not in st.session_state:
    q_runs = [i for i in st.query_params.get("runs", "").split(",") if i in by_id]
    q_group = st.query_params.get("group")
    latest_tag, latest_ids = api.latest_comparison(runs)
    if q_runs:
        chosen = q_runs
    elif q_group in groups:
        chosen = groups[q_group]
    elif [i for i in st.session_state.get("compare_ids", []) if i in by_id]:
        chosen = [i for i in st.session_state["compare_ids"] if i in by_id]
    elif latest_ids:
        chosen = latest_ids
    else:
        chosen = [r.id for r in runs[:4]]
    st.session_state["compare_runs"] = chosen
    st.session_state["compare_group"] = q_group if q_group in groups else (
        latest_tag if chosen == latest_ids else None)

g1, g2 = st.columns([1, 3])
g1.selectbox("Group (tag)", list(groups), key="compare_group", on_change=pick_group,
             index=None, placeholder="choose a tagged group",
             help="Runs launched together share a tag, e.g. compare-<time>.")
g2.multiselect("Runs", list(by_id), key="compare_runs", format_func=lambda i:
               common.short_label(by_id[i]))
ids = [i for i in st.session_state["compare_runs"] if i in by_id]
st.session_state["compare_ids"] = ids
if not ids:
    st.info("Pick at least one run.")
    st.stop()
any_running = any(by_id[i].status in api.ACTIVE for i in ids)


def summary(records: list, signal: str, names: list[str]) -> tuple[list, pd.DataFrame]:
    rows = common.summary_rows(records, signal)
    return rows, common.summary_table(rows, names)


@st.fragment(run_every=common.REFRESH_SECONDS * 2 if any_running else None)
def comparison() -> None:
    common.require_sign_in()
    loaded = [derived.load_run(i) for i in ids]  # shared while the files stay the same
    records = [r for r, _ in loaded if r is not None]
    key, shared = tuple(k for r, k in loaded if r is not None), derived.shared
    names = [common.short_label(r) for r in records]
    colors = charts.colors_for(names, [common.recipe_of(r) for r in records])
    status = " · ".join(f"{n}: {common.status_md(r.status)} {r.step}/{r.total_steps}"
                        for n, r in zip(names, records, strict=True))
    st.caption(status + (" — updating live" if any_running else ""))
    for r in records:
        if r.status in ("failed", "damaged"):
            st.warning(f"{common.short_label(r)}: {common.plain_error(r)}")

    catalogue = shared((key, "catalogue"), lambda: common.metric_catalogue(records))
    labels = list(catalogue)
    c1, c2, c3 = st.columns([2, 1, 1])
    metric = c1.selectbox("Metric over steps", labels, key="compare_metric",
                          index=labels.index("ECE — verbalized") if "ECE — verbalized"
                          in labels else 0)
    signal = c2.selectbox("Confidence signal (reliability)", list(common.SIGNAL_LABELS),
                          key="compare_signal", format_func=common.SIGNAL_LABELS.get)
    posthoc = c3.radio("Calibration", common.CALIBRATION_VIEWS, key="compare_calibration_view",
                       help=common.CALIBRATION_VIEW_HELP) == common.CALIBRATION_VIEWS[1]
    if posthoc and not all(common.has_posthoc(r.evals) for r in records if r.evals):
        st.info("Some of these runs predate post-hoc recalibration: they logged only the raw "
                "signals, so their calibration figures are missing in this view.")
    source, field = catalogue[metric]
    if common.calibration_field(field, posthoc) != field:
        field, metric = common.calibration_field(field, posthoc), f"{metric}, post-hoc"
    signal = common.calibration_entry(signal, posthoc)
    seed_groups = api.seed_groups(records)
    pooled = any(len(g.ids) > 1 for g in seed_groups) and st.toggle(
        "Mean ± sd over seeds", key="compare_seeds", value=True,
        help="Runs with the same settings apart from the seed are drawn as one line (their "
             "mean) with a band of ± one standard deviation, and summarised the same way.")
    if pooled:
        group_colors = charts.colors_for([g.name for g in seed_groups],
                                         [g.recipe for g in seed_groups])
        bands = [charts.MeanSd(f"{g.name} (n = {len(g.ids)})",
                               *api.seed_band([r for r in records if r.id in g.ids],
                                              source, field), color)
                 for g, color in zip(seed_groups, group_colors, strict=True)]
        st.plotly_chart(charts.mean_sd_lines(bands, metric, y_title=metric),
                        key="compare_chart_metric")
    else:
        series = [charts.Series(n, *charts.column(r.evals if source == "eval" else r.train,
                                                  field),
                                color=col, mode="lines+markers" if source == "eval" else "lines")
                  for n, r, col in zip(names, records, colors, strict=True)]
        st.plotly_chart(derived.figure((key, "metric", field), lambda: charts.lines(
            series, metric, y_title=metric)), key="compare_chart_metric")
    st.caption("Runs with the same model, task and seed start from the same step-0 "
               "evaluation, so their first points coincide; they part as training goes on.")

    p1, p2 = st.columns(2)
    p1.plotly_chart(derived.figure((key, "passk"), lambda: charts.pass_at_k(
        [(n, r.evals[-1].get("pass_at_k") if r.evals else None, col, "solid")
         for n, r, col in zip(names, records, colors, strict=True)],
        "Pass@k at each run's last evaluation")), key="compare_chart_passk")
    p2.plotly_chart(derived.figure((key, "rel", signal), lambda: charts.reliability(
        [(n, r.evals[-1] if r.evals else None, col)
         for n, r, col in zip(names, records, colors, strict=True)], signal,
        "Reliability at each run's last evaluation")), key="compare_chart_rel")

    st.subheader("Start → end")
    if pooled:
        rows = common.summary_rows(records, signal)
        st.dataframe(pd.DataFrame(api.seed_table(rows, seed_groups)), key="compare_table")
    else:
        rows, table = shared((key, "summary", signal), lambda: summary(records, signal, names))
        st.dataframe(table, key="compare_table")
    st.caption("Each cell: first evaluation → last evaluation (change). Lower ECE and Brier "
               "are better; AUROC 0.5 means the confidence cannot tell right from wrong.")
    csv = pd.DataFrame(rows).to_csv(index=False)
    st.download_button("Download the summary (CSV)", csv, file_name="comparison.csv",
                       mime="text/csv", key="compare_csv")


comparison()
