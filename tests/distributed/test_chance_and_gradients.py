"""Chance under gathering and the gradient scale of each open_clip layout, on 2 gloo ranks."""

import math

import pytest

from .ranks import run_ranks
from .workers import chance_of_run, grad_scale

B = 8
BASE = ["dataset.batch_size=8", "dataset.num_train=32"]


@pytest.mark.parametrize("extra, candidates", [
    ([], B),  # not gathered: each row sees its own rank's B candidates
    (["losses.gather_features=true"], 2 * B),
    (["losses.gather_features=true", "losses.gather_with_grad=true", "losses.local_loss=true"], 2 * B),
])
def test_chance_is_ln_of_candidates_per_row(extra, candidates):
    ranks = run_ranks(chance_of_run, BASE + extra)
    for r in ranks:
        assert r["candidates"] == candidates
        assert r["chance"] == pytest.approx(math.log(candidates))
        assert r["history_chance"] == pytest.approx([math.log(candidates)] * 2)


def test_gradient_scale_of_each_layout():
    # gathered without grad, non-local: only the local slice is differentiable and DDP divides by W
    no_grad = run_ranks(grad_scale, {"with_grad": False, "local": False})
    assert no_grad[0]["dist_grad_scale"] == pytest.approx(0.5, rel=1e-4)
    assert no_grad[0]["dist_grad_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert no_grad[0] == no_grad[1]  # every rank records the same numbers
    for layout in ({"with_grad": True, "local": False}, {"with_grad": True, "local": True}):
        ok = run_ranks(grad_scale, layout)[0]
        assert ok["dist_grad_scale"] == pytest.approx(1.0, rel=1e-4), layout
        assert ok["dist_grad_cosine"] == pytest.approx(1.0, abs=1e-5), layout
    # local loss without grad: the terms where this rank's rows are other ranks' negatives are lost
    local = run_ranks(grad_scale, {"with_grad": False, "local": True})[0]
    assert local["dist_grad_cosine"] < 0.99
