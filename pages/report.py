"""Report: an experiment's report page (the same report.html the command line writes),
reached from a claim on Home."""

import streamlit as st

from core import api
from ui import common

common.page_setup("Report")
st.title(":material/description: Experiment report")
name = st.query_params.get("folder", "")
folder = api.experiment_folder(name)
if folder is None:
    st.info("No such experiment report. Open one from a claim on Home.")
    st.page_link(common.PAGES["home"], label="Home", icon=":material/home:")
    st.stop()
html = api.report_html(folder)
if html is None:
    st.info(f"The experiment in {folder.name} is still running: its report is written when "
            "its last run ends. Its runs are listed on the Runs page meanwhile.")
    st.stop()
st.caption(f"{folder}")
st.download_button("Download the report (HTML, opens offline)", html, file_name="report.html",
                   mime="text/html", key="report_download")
st.iframe(html, height=1400)
