"""Runs: every run in the store. Open, compare, stop, tag, export as a zip, delete."""

import time

import pandas as pd
import streamlit as st

from core import api
from ui import common

common.page_setup("Runs")

st.title(":material/folder_open: Runs")
runs = api.list_runs()
where = "" if api.workshop_settings().enabled else f"Run folder: `{api.runs_dir().resolve()}` · "
queue = api.queue_state(runs)
st.caption(f"{where}{len(runs)} runs; {queue.running} of {queue.cap} training at once, "
           f"{len(queue.line)} waiting. Runs live on disk: closing the browser or restarting "
           "the app loses nothing.")
if not runs:
    st.info("No runs yet: start one on the Launch page or the quick comparison on Home.")
    st.stop()
by_id = {r.id: r for r in runs}

f1, f2 = st.columns([1, 2])
statuses = f1.multiselect("Status", list(common.STATUS_COLORS), key="runs_status",
                          placeholder="any status")
text = f2.text_input("Recipe, tag or id contains", key="runs_text")
shown = [r for r in runs if (not statuses or r.status in statuses)
         and (not text or text in " ".join([r.id, common.recipe_of(r), *r.tags]))]
st.dataframe(pd.DataFrame([{
    "run": r.id, "status": common.status_text(r.status), "recipe": common.recipe_of(r),
    "task": api.task_label(str(r.config.get("task", ""))), "seed": r.config.get("seed"),
    "progress": f"{r.step}/{r.total_steps}", "tags": ", ".join(r.tags),
    "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at))
    if r.started_at else "—"} for r in shown]), hide_index=True, key="runs_table")

st.subheader("Act on a run")
if not shown:
    st.info("No run matches the filter.")
    st.stop()
shown_ids = [r.id for r in shown]
default = common.query_run_id()
run_id = st.selectbox("Run", shown_ids, key="runs_pick",
                      index=shown_ids.index(default) if default in shown_ids else 0,
                      format_func=lambda i: common.run_label(by_id[i]))
r = by_id[run_id]
mine = common.may_change(r)
if r.status in ("failed", "damaged"):
    st.warning(common.plain_error(r))
if not mine:
    st.caption(common.owner_note(r).capitalize() + ".")

a1, a2, a3, a4 = st.columns(4)
if a1.button("Open", key="runs_open", width="stretch", icon=":material/monitoring:"):
    common.open_run(run_id)
if a2.button("Compare its group", key="runs_compare", width="stretch",
             icon=":material/compare_arrows:",
             disabled=not r.tags, help="Opens Compare with every run sharing its first tag."):
    group = r.tags[0]
    common.open_compare([x.id for x in runs if group in x.tags], group=group)
if r.status in api.ACTIVE and a3.button("Stop", key="runs_stop", width="stretch",
                                         icon=":material/stop:", disabled=not mine):
    st.toast("Stopping after the current step…" if api.stop(run_id, user=common.user())
             else "It was not running.")
a4.download_button("Export as zip", lambda: api.export_zip(run_id), file_name=f"{run_id}.zip",
                   mime="application/zip", key="runs_export", width="stretch",
                   icon=":material/download:")

t1, t2 = st.columns([3, 1])
tags = t1.text_input("Tags (comma-separated)", value=", ".join(r.tags),
                     key=f"runs_tags_{run_id}")
if t2.button("Save tags", key="runs_save_tags", width="stretch", disabled=not mine):
    saved = api.set_tags(run_id, tags, user=common.user())
    st.toast(f"Tags saved: {', '.join(saved) or 'none'}")
    st.rerun()

if r.status in api.ACTIVE:
    st.caption(f"A {r.status} run cannot be deleted: stop it first.")
elif mine and st.session_state.get("runs_confirm") == run_id:
    st.warning(f"Delete run `{run_id}` and all its files? This cannot be undone.")
    d1, d2, _ = st.columns([1, 1, 4])
    if d1.button("Yes, delete", type="primary", key="runs_delete_yes"):
        try:
            api.delete(run_id, user=common.user())
        except (ValueError, OSError) as e:  # WorkshopError is an OSError too
            st.error(f"Could not delete: {e}")
        else:
            st.session_state.pop("runs_confirm", None)
            st.toast(f"Deleted {run_id}")
            st.rerun()
    if d2.button("Cancel", key="runs_delete_no"):
        st.session_state.pop("runs_confirm", None)
        st.rerun()
elif mine and st.button("Delete…", key="runs_delete", icon=":material/delete:"):
    st.session_state["runs_confirm"] = run_id
    st.rerun()
