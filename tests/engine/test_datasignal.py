"""The data-signal check (`diagnose.engine.datasignal`): signal on synthetic pairs and none when the
captions are shuffled, the ridge map and its GCV, the permutation test; recorded by a watch and by an
instrumented run."""

from __future__ import annotations

import math

import pytest
import torch

from diagnose import watch
from diagnose.core.rules.data import PROBE
from diagnose.engine.datasignal import data_signal, ridge_gcv
from diagnose.lab.signal_inputs import sample_training_pairs
from tests.conftest import tiny_config

PAIRS = ["dataset.num_train=256"]  # enough pairs for a 128/128 split at tiny widths


def _pairs(shuffle: bool = False, n: int = 256):
    cfg = tiny_config("direct", PAIRS + (["dataset.shuffle_captions=true"] if shuffle else []))
    return sample_training_pairs(cfg, n=n)


def test_signal_on_synthetic_pairs_and_none_when_captions_shuffled():
    good = data_signal(*_pairs())
    assert good.significant and good.p_value <= good.alpha
    assert good.r1 >= 20 * good.chance_r1  # 128 held-out pairs: chance 0.0078
    bad = data_signal(*_pairs(shuffle=True))
    assert not bad.significant and bad.p_value > bad.alpha
    assert bad.i2t_r1 < bad.detectable_r1  # what chance gives: below the detection limit
    assert good.n_test == bad.n_test == 128


def test_ridge_matches_normal_equations_and_gcv_picks_the_grid_minimum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 10, generator=g, dtype=torch.float64)
    y = x @ torch.randn(10, 4, generator=g,
                        dtype=torch.float64) + 0.5 * torch.randn(60, 4, generator=g, dtype=torch.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    grid = (1e-2, 1e-1, 1.0, 10.0)
    w, lam = ridge_gcv(x, y, grid)
    ref = torch.linalg.solve(x.t() @ x + lam * torch.eye(10, dtype=torch.float64), x.t() @ y)
    assert torch.allclose(w, ref, atol=1e-8)
    scale = float((torch.linalg.svdvals(x) ** 2).mean())

    def gcv(c):  # brute force: hat matrix
        h = x @ torch.linalg.solve(x.t() @ x + c * scale * torch.eye(10, dtype=torch.float64), x.t())
        return 60 * float(((y - h @ y) ** 2).sum()) / (60 - float(torch.trace(h))) ** 2

    assert lam == pytest.approx(min(grid, key=gcv) * scale)


def test_permutation_p_value_is_not_small_under_the_null_and_nan_is_not_a_score():
    g = torch.Generator().manual_seed(1)
    ps = [data_signal(torch.randn(200, 16, generator=g), torch.randn(200, 8, generator=g),
                      seed=s).p_value for s in range(5)]
    assert min(ps) > 0.01  # independent image/text: no run of five should reject at 1%
    img, txt = _pairs(n=64)
    img[3, 0] = float("nan")
    out = data_signal(img, txt)
    assert math.isnan(out.r1) and math.isnan(out.p_value) and not out.significant
    assert out.to_dict()["r1"] is None  # JSON: null, never a number


def test_watch_records_the_check_and_its_finding():
    model = torch.nn.Linear(4, 4)
    with watch(model, alarm="off", batch_size=16) as w:
        result = w.data_signal(*_pairs(shuffle=True))
    assert not result.significant
    recs = w.records
    assert set(recs[recs["probe"] == PROBE]["metric"]) >= {"r@1", "p_value", "significant"}
    summary = w.result().to_dict()
    assert summary["runs"][0]["data_signal"]["significant"] is False
    assert "no_data_signal" in {f["id"] for f in summary["findings"]}


def test_instrumented_run_checks_its_training_pairs():
    from diagnose.lab.runs import instrumented_summary, run_instrumented

    cfg = tiny_config("direct", PAIRS + ["dataset.shuffle_captions=true"])
    summary, _ = instrumented_summary([run_instrumented(cfg, 3, "cpu")])
    d = summary.to_dict()
    assert d["runs"][0]["data_signal"]["significant"] is False
    assert d["runs"][0]["root_causes"][0]["cause"] == "misaligned_pairs"
    healthy = tiny_config("direct", PAIRS)
    summary, _ = instrumented_summary([run_instrumented(healthy, 3, "cpu")])
    run = summary.to_dict()["runs"][0]
    assert run["data_signal"]["significant"] is True
    assert "no_data_signal" not in {f["id"] for f in summary.to_dict()["findings"]}
