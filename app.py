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

st.subheader("Start here: the quick comparison")
runs = api.list_runs()
est = api.estimate_comparison(runs)
st.markdown(
    f"One click trains **{', '.join(api.COMPARISON_RECIPES)}** side by side on the embedded "
    f"tiny arithmetic model (quick settings: 100 steps, evaluation every 20). The four "
    f"runs share this machine: expect {common.fmt_estimate(est)}. You can watch them live; "
    "closing the browser does not stop them. (The command line's `classic` experiment is "
    "the longer one: six recipes × three seeds at 300 steps.)")
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
