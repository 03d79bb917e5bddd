"""The unit tier never writes to the host's own skycache state: every test gets a state directory,
a loop directory and a lock directory of its own (tests that run real commands, such as the bench's
host mode with file images, register repositories there)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.mktemp("skycache-state")
    monkeypatch.setenv("SKYCACHE_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("SKYCACHE_LOOP_DIR", str(root / "loops"))
    monkeypatch.setenv("SKYCACHE_RUN_DIR", str(root / "run"))
    return root
