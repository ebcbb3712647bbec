import pytest
import torch

from reference_models import apply_scale, load_config

# Tiny models: one thread avoids OpenMP spin-waits that make small ops 10-50x slower when the
# two cores are shared with another process (CI runners, a parallel benchmark).
torch.set_num_threads(1)

# Small overrides that make a CPU run take a second or two.
TINY = ["dataset.num_train=64", "dataset.num_val=32", "dataset.batch_size=16"]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


def tiny_config(name: str = "direct", extra: list[str] | None = None):
    return apply_scale(load_config(name, TINY + list(extra or [])), "tiny")
