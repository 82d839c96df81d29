"""End to end in a real browser: start the app, launch a tiny run through the Launch form,
close the browser, come back, watch it finish, and check the charts drew real data.

Debian's `chromium` driven by pip's playwright (never `playwright install`); `make test`
installs chromium when it is missing. Full-page screenshots go to artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUN_TIMEOUT_S = 150

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium "
                                "(`make test` installs it: apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    """The app on a free port, on an empty run store of its own."""
    port = free_port()
    env = dict(os.environ, CALIBRATION_LAB_RUNS=str(tmp_path / "runs"))
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the app did not start:\n"
                                   + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.3)
        yield url, tmp_path / "runs"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        for run in (tmp_path / "runs").glob("*/status.json"):  # never leave a run behind
            status = json.loads(run.read_text())
            if status.get("status") in ("queued", "running") and status.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(status["pid"], 15)


def wait_idle(page, timeout: float = 20.0) -> None:
    """Until Streamlit has finished the rerun a widget change started."""
    page.wait_for_timeout(300)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not page.locator("[data-testid=stStatusWidget]").filter(
                has_text="Running").count():
            return
        page.wait_for_timeout(200)


def pick_option(page, selectbox: str, option: str) -> None:
    """Open the selectbox labelled `selectbox` and choose `option`. A click on a page still
    settling can leave the list shut (seen once in CI), so open it again until the option
    shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator("[data-testid=stSelectbox]").filter(has_text=selectbox)
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(5):
        wait_idle(page)
        box.click()
        try:
            choice.wait_for(state="visible", timeout=5_000)
        except PlaywrightTimeout:  # the list is shut: close whatever is open, try again
            page.keyboard.press("Escape")
            continue
        choice.click()
        wait_idle(page)
        return
    raise AssertionError(f"the option {option!r} of {selectbox!r} never showed")


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def screenshot(page, name: str) -> None:
    """The whole page: the viewport grows to Streamlit's scroll height first."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stAppViewContainer], section')]"
        ".map(e => e.scrollHeight), 900)")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 12000)})
    page.wait_for_timeout(1200)  # charts re-layout to the new size
    page.screenshot(path=str(ARTIFACTS / f"e2e-{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})


PLOTS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(el => ({
    title: ((el.layout && el.layout.title && el.layout.title.text) || '')
        .replace(/<[^>]+>/g, ''),
    traces: (el.data || []).map(t => ({name: t.name || '',
        y: Array.from(t.y || []).filter(v => v !== null)}))}))"""


def plots(page, at_least: int = 6, timeout: float = 30.0) -> dict[str, list[dict]]:
    """The drawn Plotly charts, once `at_least` of them hold data (they draw lazily, and
    slower on a loaded machine, so a fixed pause is not enough)."""
    deadline = time.time() + timeout
    while True:
        drawn = {p["title"]: p["traces"] for p in page.evaluate(PLOTS_JS)}
        with_data = [t for t in drawn.values() if any(tr["y"] for tr in t)]
        if len(with_data) >= at_least or time.time() > deadline:
            return drawn
        page.mouse.wheel(0, 20_000)
        page.wait_for_timeout(500)


def test_launch_watch_and_inspect_a_run_in_chromium(app_url):
    from playwright.sync_api import expect, sync_playwright

    url, runs = app_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # 1. Launch a tiny run through the form.
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/launch")
            expect(page.get_by_text("Launch a run")).to_be_visible(timeout=30_000)
            for label, value in [("Steps", 4), ("Prompts per step", 4), ("G (group size)", 4),
                                 ("Evaluate every (steps)", 2), ("Eval prompts", 16),
                                 ("n (samples per prompt)", 4)]:
                set_number(page, label, value)
            expect(page.get_by_text("4 steps of 4 prompts × G = 4; 3 evaluations of 16 "
                                    "prompts × n = 4")).to_be_visible(timeout=20_000)
            screenshot(page, "1-launch")
            page.get_by_role("button", name="Launch", exact=True).click()
            page.wait_for_url("**/run?run=*", timeout=30_000)
            run_id = parse_qs(urlparse(page.url).query)["run"][0]
            assert (runs / run_id / "config.json").is_file()
            config = json.loads((runs / run_id / "config.json").read_text())
            assert (config["steps"], config["group_size"], config["eval_samples"]) == (4, 4, 4)

            # 2. Close the browser; the run goes on. A new browser finds it.
            page.context.close()
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/run?run={run_id}")
            expect(page.get_by_text("Status:")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(re.compile(r"Status: ● finished")).first).to_be_visible(
                timeout=RUN_TIMEOUT_S * 1000)
            wait_idle(page)
            page.mouse.wheel(0, 20_000)  # let every chart scroll into view and draw

            # 3. The charts drew real data.
            drawn = plots(page)
            assert len(drawn) >= 6, drawn
            hist = next(v for k, v in drawn.items() if k.startswith("Confidence histogram"))
            assert {t["name"] for t in hist} == {"correct", "wrong"}
            last = [json.loads(line) for line in
                    (runs / run_id / "metrics.jsonl").read_text().splitlines()][-1]
            binned = last["eval/calibration/verbalized/count"]  # well-formed samples of 64
            assert 0 < binned <= 16 * 4
            assert sum(sum(t["y"]) for t in hist) == binned
            passk = next(v for k, v in drawn.items() if k == "Pass@k")
            assert passk and all(len(t["y"]) == 3 for t in passk)  # k = 1, 2, 4
            rel = next(v for k, v in drawn.items() if k.startswith("Reliability"))
            assert len(rel) == 3 and rel[-1]["y"]  # diagonal, step 0 (faded), last step
            assert any(k.startswith("Accuracy") for k in drawn)
            screenshot(page, "2-run-finished")

            # 4. The other pages find the run too.
            page.goto(f"{url}/compare?runs={run_id}")
            expect(page.get_by_text("Start → end")).to_be_visible(timeout=30_000)
            wait_idle(page)
            screenshot(page, "3-compare")
            page.goto(f"{url}/runs")
            expect(page.get_by_text("Act on a run")).to_be_visible(timeout=30_000)
            screenshot(page, "4-runs")
            page.goto(url)
            expect(page.get_by_text("Recent runs")).to_be_visible(timeout=30_000)
            screenshot(page, "0-home")
        finally:
            browser.close()
    status = json.loads((runs / run_id / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 4


def test_launch_a_tiny_sweep_from_its_page_in_chromium(app_url):
    from playwright.sync_api import expect, sync_playwright

    url, runs = app_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/sweep")
            expect(page.get_by_text("No sweep yet")).to_be_visible(timeout=30_000)
            pick_option(page, "Preset", "smoke")
            for label, value in [("Its values, comma-separated", "1e-3"), ("Seeds", "0")]:
                box = page.get_by_label(label, exact=True)
                box.fill(value)
                box.press("Enter")
                wait_idle(page)
            expect(page.get_by_text("2 runs (1 lr × 2 recipe × 1 seeds)")).to_be_visible(
                timeout=20_000)
            page.get_by_role("button", name="Launch the sweep").click()
            expect(page.get_by_text(re.compile(r"2 finished"))).to_be_visible(
                timeout=RUN_TIMEOUT_S * 1000)
            wait_idle(page)
            drawn = plots(page, at_least=2)
            effect = next(v for k, v in drawn.items() if "at the end vs" in k)
            assert effect and effect[-1]["y"]
            screenshot(page, "5-sweep")
        finally:
            browser.close()
    sweeps = list((runs / "sweeps").iterdir())
    assert len(sweeps) == 1
    deadline = time.time() + 60  # the sweep's own process writes the report as it ends
    while not (sweeps[0] / "report.html").exists() and time.time() < deadline:
        time.sleep(0.5)
    summary = json.loads((sweeps[0] / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["finished", "finished"]
    assert [r["params"]["recipe"] for r in summary["runs"]] == ["binary", "rlcr"]
