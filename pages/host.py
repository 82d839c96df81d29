"""Host: the workshop from the host's seat (the host's code only). Who is here, each
person's runs and place in the queue, the machine's load; stop any run; revoke and add
codes; the audit trail."""

import os
import shutil
import time

import pandas as pd
import streamlit as st

from core import api
from ui import common

common.page_setup("Host")
st.title(":material/admin_panel_settings: Host")
ws = api.workshop_settings()
if not common.is_host():
    st.info("This page is the workshop host's: sign in with the host's code."
            if ws.enabled and ws.codes else
            "The host's page exists in workshop mode with participant codes "
            "(`python -m core workshop codes N`, then `make workshop`).")
    st.stop()


@st.fragment(run_every=common.REFRESH_SECONDS * 2)
def room() -> None:
    common.require_sign_in()
    now = time.time()
    runs = api.list_runs()
    queue = api.queue_state(runs)
    m = st.columns(4)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    m[0].metric("Load (1 min)", f"{load:.1f}", help=f"{os.cpu_count()} CPU cores here")
    m[1].metric("Training", f"{queue.running} of {queue.cap}")
    m[2].metric("Waiting", len(queue.line))
    where = api.runs_dir() if api.runs_dir().is_dir() else "."
    m[3].metric("Disk free", f"{shutil.disk_usage(where).free / 1e9:.1f} GB")

    st.subheader("Who is here")
    here = api.workshop.present(now)
    st.caption(f"{len(here)} session{'s' * (len(here) != 1)} with an action in the last "
               f"{api.workshop.PRESENT_FOR:.0f} s (a watched live run counts).")
    if here:
        st.dataframe(pd.DataFrame([{"name": p.name, "code": p.code_id, "address": p.source,
                                    "last action": f"{now - p.last_seen:.0f} s ago"}
                                   for p in here]), hide_index=True, key="host_here")

    st.subheader("Each person's runs")
    book = api.codes.load()
    people = {c.name: c for c in (book.codes if book else ()) if c.live}
    rows = []
    for r in runs:
        place = queue.position(r.id)
        rows.append({"person": r.owner or "—", "code": people[r.owner].id
                     if r.owner in people else "—", "run": r.id, "recipe": common.recipe_of(r),
                     "status": r.status, "queue place": place,
                     "progress": f"{r.step}/{r.total_steps}"})
    if rows:
        rows.sort(key=lambda x: (x["status"] not in api.ACTIVE, x["person"], x["run"]))
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="host_runs")
    else:
        st.caption("No runs yet.")


room()

st.subheader("Stop a run")
live = [r for r in api.list_runs() if r.status in api.ACTIVE]
if live:
    by_id = {r.id: r for r in live}
    s1, s2 = st.columns([3, 1])
    pick = s1.selectbox("Live run", list(by_id), key="host_stop_pick",
                        format_func=lambda i: f"{by_id[i].owner or '—'} · "
                                              f"{common.run_label(by_id[i])}")
    if s2.button("Stop", key="host_stop", icon=":material/stop:", width="stretch"):
        st.toast("Stopping after the current step…" if api.stop(pick, user=common.user())
                 else "It already ended.")
else:
    st.caption("No run is queued or running.")

st.subheader("Codes")
book = api.codes.load()
revocable = [c for c in (book.codes if book else ()) if c.live and c.role != api.codes.HOST]
c1, c2 = st.columns([3, 1])
who = c1.selectbox("Revoke a code (that person is signed out at their next action)",
                   [c.id for c in revocable], key="host_revoke_pick", index=None,
                   placeholder="choose a person",
                   format_func=lambda i: f"{i} · {book.by_id(i).name}")
if c2.button("Revoke", key="host_revoke", disabled=who is None, width="stretch",
             icon=":material/block:"):
    done = api.workshop.revoke_code(who)
    st.toast(f"Revoked {done.id} ({done.name}).")
    st.rerun()
names = st.text_area("Add codes: one name per line", key="host_add_names",
                     help="A name that a revoked code had gets it back, with its runs: "
                          "that is how a person who lost their code gets a new one.")
if st.button("Make codes", key="host_add", icon=":material/key:",
             disabled=not names.strip()):
    made = api.workshop.add_codes(names.splitlines())
    st.success("Hand these out now: the codes are shown only this once.")
    st.code(api.codes.sheet(made), language=None)

st.subheader("Audit trail")
trail = api.workshop.audit_tail(100)
if trail:
    st.dataframe(pd.DataFrame([{**row, "time": time.strftime("%H:%M:%S",
                                                            time.localtime(row.get("time", 0)))}
                               for row in trail]).astype(str), hide_index=True,
                 key="host_audit")
else:
    st.caption("Nothing recorded yet.")
