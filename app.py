"""Calibration Lab: `streamlit run app.py` (or `make app`). The Home page.

The other pages live in pages/ (Streamlit's multipage folder); every page draws the same
sidebar through `ui.common.page_setup`, so it does not matter which page a visitor opens first.
"""

import time

import streamlit as st

from core import api
from core.recipe_info import RECIPE_INFO
from ui import common

common.page_setup("Home")
st.title(":material/target: Calibration Lab")
st.markdown(
    "**Can log-likelihood training plus a binary right/wrong reward give a model that "
    "knows what it knows — whose stated confidence matches its accuracy?** "
    "The literature says *not on its own*: a binary reward never punishes a confidently "
    "wrong answer, so recipes that score the confidence itself (RLCR) or reshape the "
    "reward (PSR, NSR) are needed — try them here and watch calibration move.")

st.subheader("The claims")
st.caption("What the literature reports, the named experiment that tests it here, and what "
           "this machine measured the last time it ran. Each experiment runs with its own "
           "settings, in the background, through the same queue as every other run.")
VERDICT_BADGES = {"held": ":green-badge[held]", "not held": ":red-badge[not held]",
                  "running": ":blue-badge[running]", "not run": ":gray-badge[not run]"}
for claim in api.claims():
    result = api.claim_result(claim)
    with st.container(border=True, key=f"home_claim_{claim.key}"):
        st.markdown(f"**{claim.title}** · experiment `{claim.experiment}`")
        st.markdown(f"*Literature* ({claim.source}): {claim.statement}")
        line = f"**This machine:** {VERDICT_BADGES[result.verdict]}"
        if result.targets:
            held = sum(t["status"] == "PASS" for t in result.targets)
            judged = sum(t["status"] in ("PASS", "FAIL") for t in result.targets)
            line += (f" — {held} of {judged} targets held, seeds "
                     f"{', '.join(map(str, result.seeds))}, report of {result.created_at}")
        st.markdown(line)
        if result.folder is not None:
            st.page_link(common.PAGES["report"], label="Open the report",
                         icon=":material/description:",
                         query_params={"folder": result.folder.name})
        c1, c2 = st.columns([2, 1])
        seeds = c1.radio("Seeds", list(api.CLAIM_SEED_CHOICES), horizontal=True,
                         key=f"home_claim_seeds_{claim.key}",
                         help="One seed shows the effect in a fraction of the time; the "
                              "report's verdict is a mean over seeds, so three are the "
                              "fair test.")
        if c2.button("Run this experiment", key=f"home_claim_run_{claim.key}",
                     icon=":material/play_arrow:", disabled=result.verdict == "running"):
            try:
                folder = api.launch_claim(claim.experiment, api.CLAIM_SEED_CHOICES[seeds])
            except Exception as e:  # workshop mode, a full disk: say it, no traceback
                st.error(f"Could not start the experiment: {e}")
            else:
                st.success(f"Started: the report will be written to {folder}. Its runs "
                           "appear under Recent runs as they start.")

st.subheader("Start here: the quick comparison")
runs = api.list_runs()
est = api.estimate_comparison(runs)
compared = api.comparison_config()
st.markdown(
    f"One click trains **{', '.join(api.COMPARISON_RECIPES)}** side by side on the embedded "
    f"tiny arithmetic model with the calibration experiment's own settings ({compared.steps} "
    f"steps, evaluation every {compared.eval_every}, seed {compared.seed}). The four runs "
    f"share this machine: expect {common.fmt_estimate(est)}. You can watch them live; "
    "closing the browser does not stop them. (The command line's `classic` experiment runs "
    "all six recipes × three seeds.)")
if st.button("Run the quick comparison", type="primary", key="home_compare",
             icon=":material/play_arrow:"):
    try:
        tag, ids = api.launch_comparison(now=time.time(), user=common.user())
    except Exception as e:  # a missing model or a full disk: say it, no traceback
        st.error(f"Could not start the comparison: {e}")
    else:
        common.open_compare(ids, group=tag)

st.subheader("The recipes")
cols = st.columns(2)
for i, (name, info) in enumerate(RECIPE_INFO.items()):
    with cols[i % 2].container(border=True):
        st.markdown(f"**{name}**" + ("" if info.uses_labels else " · *no labels*"))
        st.caption(info.summary)
        st.latex(common.latex_lines(info.formula))
st.caption("c = 1 if the answer is right, else 0; q = the confidence the model states; "
           "A = the advantage that multiplies log π of each completion token.")
st.caption("Formulas, papers, confidence signals, metrics and what the lab's experiments show: "
           "`docs/science.md` in the repository.")

st.subheader("Recent runs")
if not runs:
    st.info("No runs yet. Start the quick comparison above, or pick your own settings "
            "on the Launch page.")
for r in runs[:8]:
    c1, c2 = st.columns([4, 1])
    c1.page_link(common.PAGES["run"], label=common.run_label(r, status=True),
                 query_params={"run": r.id})
    c2.caption(f"step {r.step}/{r.total_steps}" if r.status != "damaged" else "—")
if len(runs) > 8:
    st.page_link(common.PAGES["runs"], label=f"All {len(runs)} runs →")
