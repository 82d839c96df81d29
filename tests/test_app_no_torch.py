"""No page imports torch (nor ray), directly or through core: each page runs in a fresh
interpreter (AppTest, on the recorded runs) and torch, transformers, peft and ray must stay
unloaded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from app_helpers import APP, FIXTURE_RUNS, ROOT

HEAVY = ("torch", "transformers", "peft", "ray")
SCRIPT = textwrap.dedent("""
    import json, os, shutil, sys, tempfile
    HEAVY = ("torch", "transformers", "peft", "ray")
    from streamlit.testing.v1 import AppTest
    root = tempfile.mkdtemp()
    shutil.copytree(sys.argv[3], root + "/runs")
    os.environ["CALIBRATION_LAB_RUNS"] = root + "/runs"
    from core import device
    device._device = device.DeviceInfo(True)  # the real probe is a subprocess; skip it here
    at = AppTest.from_file(sys.argv[1], default_timeout=60).run()
    if sys.argv[2] != "home":
        at.switch_page(f"pages/{sys.argv[2]}.py").run()
    print(json.dumps({"exceptions": [e.value for e in at.exception],
                      "titles": [t.value for t in at.title],
                      "loaded": [m for m in HEAVY if m in sys.modules]}))
    shutil.rmtree(root)
""")


@pytest.mark.parametrize("name", ["home", "launch", "run", "compare", "runs", "sweep"])
def test_page_does_not_import_torch(name):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(APP), name, str(FIXTURE_RUNS)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["titles"], result
    assert not result["exceptions"], result
    assert result["loaded"] == [], f"{name} imported {result['loaded']}"


def test_api_module_is_light():
    code = ("import sys, core.api, core.config, core.runtime.store, core.recipe_info, core.charts, "
            f"ui.common; print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_model_and_data_checks_are_light_too(tmp_path):
    """The Launch page checks chat models, hub ids and task files on every rerun."""
    code = ("import sys; from core import api; from core.config import build_config; "
            "c = build_config('chat', model='Qwen/Qwen2.5-0.5B-Instruct'); "
            "api.model_status(c.model); api.memory_estimate(c); api.check_config(c.to_dict()); "
            "from ui.task_source import save_upload; "
            "save_upload('q.jsonl', b'{\"question\": \"1?\", \"answer\": \"1\"}', "
            "sys.argv[1]); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
