import os

import pytest
import torch

from reference_models import apply_scale, load_config

# a rule that raises fails the test that met it (outside the tests it is left out and said: rules.base.note_failure)
os.environ.setdefault("DIAGNOSE_STRICT_RULES", "1")

# Tiny models: one thread avoids OpenMP spin-waits that make small ops 10-50x slower when the
# two cores are shared with another process (CI runners, a parallel benchmark).
torch.set_num_threads(1)

# Small overrides that make a CPU run take a second or two.
TINY = ["dataset.num_train=64", "dataset.num_val=32", "dataset.batch_size=16"]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _fixed_probe_spacing(request, monkeypatch):
    """Under the default probe budget, which steps run the expensive probes follows the measured step time,
    so a loaded CI machine reads other steps than a quiet one (a window mean near a threshold then flips).
    Tests get the budget's floor as a fixed spacing; tests of the budget itself are marked `probe_budget`."""
    if request.node.get_closest_marker("probe_budget"):
        yield
        return
    import probes.session as session
    from probes.schedule import DEFAULT_FLOOR, ExpensiveSchedule

    def fixed(every=DEFAULT_FLOOR, budget=None, **kw):
        return ExpensiveSchedule(every if every is not None else DEFAULT_FLOOR, None, **kw)

    monkeypatch.setattr(session, "ExpensiveSchedule", fixed)
    yield


def tiny_config(name: str = "direct", extra: list[str] | None = None):
    return apply_scale(load_config(name, TINY + list(extra or [])), "tiny")
