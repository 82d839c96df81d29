"""Sweep: a what-if grid. Pick one or two settings and their values, recipes and seeds; see
the run count and a time estimate; launch; watch one cell per run and the end metric against
the swept value (mean ± sd over seeds) fill in as runs finish. Never imports torch or ray."""

import streamlit as st

from core import api, charts
from core.config import PRESETS, RECIPE_NAMES, ConfigError, help_text
from ui import common

common.page_setup("Sweep")
st.title(":material/grid_on: Sweep")
st.caption("Every combination of the values below, times each seed, as ordinary runs tagged "
           "with the sweep's name: Runs and Compare show them too.")

SWEEPABLE = ("lr", "group_size", "prompts_per_step", "temperature", "kl_beta", "lora_rank",
             "max_new_tokens", "adam_beta2", "max_grad_norm", "inner_epochs", "steps",
             "wr_lambda", "rlsf_beta", "lr_schedule", "scale_rewards")
NONE = "(none)"
ray_installed, ray_address = api.ray_status()

with st.container(border=True):
    c1, c2 = st.columns(2)
    field1 = c1.selectbox("Setting to vary", SWEEPABLE, key="sweep_field1",
                          help="Any setting of a run; its help says what it does.")
    values1 = c1.text_input("Its values, comma-separated", key="sweep_values1",
                            value="5e-4, 1e-3, 2e-3", help=help_text(field1))
    field2 = c2.selectbox("A second setting (optional)", (NONE, *SWEEPABLE),
                          key="sweep_field2")
    values2 = c2.text_input("Its values", key="sweep_values2", value="",
                            disabled=field2 == NONE,
                            help=help_text(field2) if field2 != NONE else None)
    c3, c4, c5 = st.columns(3)
    recipes = c3.multiselect("Recipes", RECIPE_NAMES, default=["binary", "rlcr"],
                             key="sweep_recipes", help=help_text("recipe"))
    seeds_text = c4.text_input("Seeds", value="0, 1, 2", key="sweep_seeds",
                               help="Each setting runs once per seed; the plots show the "
                                    "mean and a ± sd band over them.")
    preset = c5.selectbox("Preset", list(PRESETS), index=list(PRESETS).index("quick"),
                          key="sweep_preset", help="The settings every run shares.")
    backends = ["local"] + (["ray"] if ray_installed else [])
    backend = st.radio(
        "Where", backends, horizontal=True, key="sweep_backend",
        format_func={"local": "this machine (the shared queue)",
                     "ray": f"Ray cluster ({ray_address or 'a local Ray started for it'})"}.get,
        help="Ray appears when the ray package is installed; the cluster's address comes "
             "from $RAY_ADDRESS.")

items = [f"{field1}={values1}"]
if field2 != NONE:
    items.append(f"{field2}={values2}")
items.append(f"recipe={','.join(recipes)}")  # recipe is not among SWEEPABLE: no clash
plan, problem = None, None
try:
    seeds = [int(s) for s in seeds_text.replace(" ", "").split(",") if s]
    if field2 == field1:
        raise ConfigError("pick two different settings")
    if not recipes:
        raise ConfigError("pick at least one recipe")
    plan = api.plan_sweep(items, seeds, preset)
except ValueError as e:  # ConfigError is a ValueError; so is a seed that is not a number
    problem = str(e) if isinstance(e, ConfigError) else "seeds must be whole numbers"

if problem:
    st.error(problem)
else:
    est = api.estimate_sweep(plan, backend)
    st.markdown(f"**{len(plan.jobs)} runs** ("
                + " × ".join(f"{len(v)} {k}" for k, v in plan.grid.items())
                + f" × {len(plan.seeds)} seeds), about **{common.fmt_duration(est.seconds)}** "
                f"({est.basis}).")
    if st.button("Launch the sweep", type="primary", key="sweep_launch",
                 icon=":material/play_arrow:"):
        try:
            st.session_state["sweep_tag"] = api.launch_sweep(plan, backend,
                                                             user=common.user())
        except Exception as e:  # workshop mode, a full disk: say it, no traceback
            st.error(f"Could not start the sweep: {e}")

st.subheader("Sweeps")
tags = api.sweep_tags()
if not tags:
    st.info("No sweep yet: launch one above, or run `python -m core sweep` in a terminal.")
    st.stop()
if st.session_state.get("sweep_tag") not in tags:
    st.session_state["sweep_tag"] = tags[0]
tag = st.selectbox("Sweep", tags, key="sweep_tag")
live = api.sweep_view(tag).active


@st.fragment(run_every=common.REFRESH_SECONDS * 2 if live else None)
def progress() -> None:
    view = api.sweep_view(tag)
    counts = {s: sum(c[2] == s for c in view.cells) for s in charts.STATE_COLORS}
    st.caption(" · ".join(f"{n} {s}" for s, n in counts.items() if n)
               + (" — updating live" if view.active else ""))
    st.plotly_chart(charts.run_grid(view.cells, "One cell per run"), key="sweep_grid")
    summary = view.summary
    if not any(s["n"] for s in summary["by_setting"]):
        st.info("The plot appears as soon as a run finishes.")
        return
    m1, m2 = st.columns(2)
    metric = m1.selectbox("End metric", charts.SWEEP_METRICS, key="sweep_metric",
                          format_func=lambda k: charts.metric_label(summary, k))
    against = m2.selectbox("Against", summary["fields"], key="sweep_against")
    st.plotly_chart(charts.sweep_effect(summary, metric, against), key="sweep_effect")
    if view.report:
        st.caption(f"Report: `{view.report}` (with summary.json and summary.csv beside it).")
    ids = [r["id"] for r in summary["runs"] if r["id"]]
    if ids and st.button("Compare these runs", key="sweep_compare"):
        common.open_compare(ids, group=tag)


progress()
