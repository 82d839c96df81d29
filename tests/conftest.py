"""Fixtures shared by the tests: every test starts runs as fresh processes; the app tests share
fake_launch."""

from __future__ import annotations

import pytest

from core.runtime.warm import WARM_ENV


@pytest.fixture(autouse=True)
def _fresh_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start fresh processes in tests (no warm server left behind); test_warm.py turns
    warm starts on for its own runs."""
    monkeypatch.setenv(WARM_ENV, "0")


@pytest.fixture
def fake_launch(monkeypatch: pytest.MonkeyPatch) -> list:
    """api.launch records each config and opens an existing recorded run instead."""
    from app_helpers import IDS  # app tests only: keeps streamlit out of the others

    from core import api

    calls = []

    def launch(config, root=None, user=None):
        calls.append(config)
        return IDS[1]  # an existing recorded run, so the Run page has something to show

    monkeypatch.setattr(api, "launch", launch)
    return calls
