"""Fixtures shared by the app tests."""

from __future__ import annotations

import pytest


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
