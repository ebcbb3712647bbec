"""The seed offset of `diagnose ablate --` (diagnose/engine/bootstrap/sitecustomize.py): seed k shifts every
seed the script sets by k, through whichever helper the script seeds with (transformers' `set_seed` here),
and a seeding call made inside another is not shifted twice."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BOOTSTRAP = Path(__file__).resolve().parents[2] / "diagnose" / "engine" / "bootstrap"


def load_bootstrap():
    spec = importlib.util.spec_from_file_location("diagnose_seed_bootstrap", BOOTSTRAP / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no DIAGNOSE_ABLATE here: it installs nothing
    return module


def test_cuda_is_seeded_once_with_the_shift():
    """torch.manual_seed(s) seeds CUDA itself (torch.cuda.manual_seed_all(s)); transformers' and accelerate's
    set_seed then call torch.cuda.manual_seed_all(s) again. Both must land on s + k, not s or s + 2k."""
    boot = load_bootstrap()
    calls: list[tuple[str, int]] = []
    cuda = SimpleNamespace(manual_seed=lambda s: calls.append(("cuda:0", s)),
                           manual_seed_all=lambda s: calls.append(("cuda", s)))

    def manual_seed(s):  # as torch.random.manual_seed: CUDA through the module attribute, then the CPU
        fake.cuda.manual_seed_all(s)
        calls.append(("cpu", s))

    fake = SimpleNamespace(manual_seed=manual_seed, random=SimpleNamespace(), cuda=cuda)
    boot._patch("torch", fake, 3)
    fake.manual_seed(5)
    fake.cuda.manual_seed_all(5)
    fake.cuda.manual_seed(5)
    assert calls == [("cuda", 8), ("cpu", 8), ("cuda", 8), ("cuda:0", 8)]
    assert fake.random.manual_seed is fake.manual_seed


DRAW = """
import json, random
import numpy as np
import torch
from transformers import set_seed

def draw():
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()]

set_seed(0)
shifted = draw()
torch.manual_seed.__wrapped__(1); np.random.seed.__wrapped__(1); random.seed.__wrapped__(1)
print(json.dumps({"shifted": shifted, "seed_1": draw()}))
"""


def test_transformers_set_seed_is_shifted(tmp_path):
    pytest.importorskip("transformers")
    env = dict(os.environ, DIAGNOSE_ABLATE=json.dumps({"seed_offset": 1}),
               PYTHONPATH=os.pathsep.join([str(BOOTSTRAP), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", DRAW], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["shifted"] == got["seed_1"]  # set_seed(0) under offset 1 is seed 1 for torch, numpy and random
