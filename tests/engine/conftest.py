"""Fixtures shared by the intervention tests."""

from __future__ import annotations

import json

import pytest

from diagnose.engine import ablation_env


@pytest.fixture
def under_ablation(tmp_path, monkeypatch):
    """Open watches as the ablation runner would: returns a function (fix, steps, params) -> status path."""
    def arm(fix: str | None, steps: int = 0, **params) -> dict:
        spec = {"run": f"fix:{fix}", "out": str(tmp_path / "run"), "status": str(tmp_path / "status.json"),
                "steps": steps, "fix": fix, "params": params}
        monkeypatch.setenv(ablation_env.ENV, json.dumps(spec))
        monkeypatch.setattr(ablation_env, "_control", None)
        return spec
    return arm
