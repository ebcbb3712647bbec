"""The contrastive probe's pair reading: linear CKA of the batch's embeddings as paired against the
captions re-paired by a fixed derangement."""

from __future__ import annotations

import torch

from probes.contrastive import _cka, _derangement


def _centred(t):
    t = torch.nn.functional.normalize(t, dim=-1)
    return t - t.mean(0)


def test_cka_separates_matching_from_shuffled_pairs_through_random_towers():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 8, generator=g)
    img = torch.tanh(z @ torch.randn(8, 32, generator=g)) + 0.3 * torch.randn(64, 32, generator=g)
    txt = torch.tanh(z @ torch.randn(8, 24, generator=g)) + 0.3 * torch.randn(64, 24, generator=g)
    cycle = _derangement(64, img.device)
    assert not bool((cycle == torch.arange(64)).any()) and sorted(cycle.tolist()) == list(range(64))
    matched = float(_cka(_centred(img), _centred(txt)))
    repaired = float(_cka(_centred(img), _centred(txt[cycle])))
    shuffled = float(_cka(_centred(img), _centred(txt[torch.randperm(64, generator=g)])))
    assert matched > repaired + 0.2
    assert abs(shuffled - repaired) < 0.1


def test_the_derangement_leaves_the_users_random_stream_alone():
    torch.manual_seed(3)
    want = torch.rand(3)
    torch.manual_seed(3)
    _derangement.cache_clear()
    _derangement(32, torch.device("cpu"))
    assert torch.equal(torch.rand(3), want)


def test_no_spread_no_reading():
    zero = torch.zeros(16, 8)
    assert torch.isnan(_cka(_centred(zero), _centred(torch.randn(16, 8))))


def _group_reading(z, targets=None):
    from probes.contrastive import Contrastive, _Readings

    r = _Readings()
    Contrastive._within_group(z, targets, r)
    (keys, values), = r.tensors
    return dict(zip([m for _, m in keys], values.tolist()))


def test_the_loss_split_at_each_rows_group_reads_a_target_at_chance_inside_it():
    # rows and columns of two kinds (even / odd indices, as [image; text] blocks read as one tower): each row gives
    # its own kind's 32 columns +8; the target (the diagonal, same kind) is any one of them
    g = torch.Generator().manual_seed(0)
    kind = torch.arange(64) % 2
    z = 8.0 * (kind[:, None] == kind[None, :]).float() + 0.3 * torch.randn(64, 64, generator=g)
    v = _group_reading(z)
    assert v["target_in_group"] > 0.9 and v["group_mass"] > 0.99
    assert abs(v["loss_in_group"] - v["ln_group"]) < 0.15 * v["ln_group"]
    # the same with the target singled out inside its group: its in-group loss falls far below ln |group|
    v = _group_reading(z + 4.0 * torch.eye(64))
    assert v["target_in_group"] == 1.0 and v["loss_in_group"] < 0.2 * v["ln_group"]
    # integer targets elsewhere (another kind's column): outside the group
    v = _group_reading(z, torch.arange(64).roll(1))
    assert v["target_in_group"] < 0.1
    # soft targets: no reading
    from probes.contrastive import Contrastive, _Readings

    r = _Readings()
    Contrastive._within_group(z, torch.rand(64, 64), r)
    assert r.tensors == []
