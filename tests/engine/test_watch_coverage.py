"""What `diagnose.watch` sees inside a user's model, and what it says it could not see.

Peer model: perceiver-pytorch's Perceiver (attention as ``sim.softmax(dim=-1)``, a tensor method).
User code: ``scaled_dot_product_attention`` imported by name, a ``torch.softmax`` pooling over the
batch axis, a frozen text projection, a text encoder run under ``torch.no_grad()``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as sdpa_by_name  # seen without a patch

import diagnose

perceiver_pytorch = pytest.importorskip("perceiver_pytorch", reason="perceiver-pytorch is in the dev extra")

B, T, D, E = 16, 10, 16, 16


class ByNameAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(E, 3 * E)

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, E // 2).permute(2, 0, 3, 1, 4)
        return sdpa_by_name(q, k, v).transpose(1, 2).reshape(x.shape)


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.perceiver = perceiver_pytorch.Perceiver(
            input_channels=D, input_axis=1, num_freq_bands=4, max_freq=10.0, depth=1, num_latents=8, latent_dim=E,
            cross_heads=1, latent_heads=2, cross_dim_head=8, latent_dim_head=8, num_classes=E,
            fourier_encode_data=False, final_classifier_head=False)
        self.mixer = ByNameAttention()
        self.pool_score = nn.Linear(E, 1)
        self.text_encoder = nn.Linear(12, E)  # the user runs it under no_grad: it cannot learn
        self.text_proj = nn.Linear(E, E).requires_grad_(False)  # frozen by mistake
        self.head = nn.Linear(E, E)  # defined, never called

    def forward(self, tokens, text):
        lat = self.mixer(self.perceiver(tokens))  # (B, latents, E)
        # weights over the BATCH axis: every sample's pooling depends on the rest of the batch
        w = torch.softmax(self.pool_score(lat), dim=0)
        img = F.normalize((w * lat).sum(1), dim=-1)
        with torch.no_grad():
            t = self.text_encoder(text)
        return img, F.normalize(self.text_proj(t), dim=-1)


@pytest.fixture(scope="module")
def watched():
    torch.manual_seed(0)
    model = UserModel()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tokens, text = torch.randn(256, T, D), torch.randn(256, 12)
    with diagnose.watch(model, opt, alarm="off", expensive_every=4, outputs={"latents": "perceiver",
                                                                             "never": "head"}) as w:
        for step in range(9):
            idx = torch.randint(0, 256, (B,))
            img, txt = model(tokens[idx], text[idx])
            logits = img @ txt.T * 10
            labels = torch.arange(B)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits, batch_size=B)
            opt.step()
    return w


def entropy_targets(w):
    r = w.records
    return set(r[(r["probe"] == "softmax_entropy") & (r["metric"] == "entropy_mean")]["target"])


def test_tensor_method_softmax_of_a_peer_model_is_attributed_to_its_module(watched):
    targets = entropy_targets(watched)
    assert "perceiver.layers.0.cross_attn.fn" in targets, sorted(targets)
    assert "perceiver.layers.0.self_attns.0.0.fn" in targets, sorted(targets)
    r = watched.records
    steps = sorted(r[(r["target"] == "perceiver.layers.0.cross_attn.fn") & (r["metric"] == "entropy_mean")]["step"])
    assert steps == [0, 4, 8]  # the expensive schedule only


def test_sdpa_imported_by_name_is_observed_with_heads(watched):
    targets = entropy_targets(watched)
    assert {"mixer", "mixer.head0", "mixer.head1"} <= targets, sorted(targets)
    r = watched.records
    h = r[(r["target"] == "mixer") & (r["metric"] == "entropy_mean")]["value"]
    assert ((h > 0) & (h <= 1)).all()


def test_functional_softmax_over_the_batch_axis_is_found(watched):
    r = watched.records
    axis = r[(r["target"] == "<root>") & (r["probe"] == "softmax_entropy") & (r["metric"] == "axis")]["value"]
    size = r[(r["target"] == "<root>") & (r["probe"] == "softmax_entropy") & (r["metric"] == "axis_size")]["value"]
    assert set(axis) == {0.0} and set(size) == {float(B)}
    s = watched.result()
    assert any(f["id"] == "softmax_over_batch" for f in s.findings), [f["id"] for f in s.findings]


def test_coverage_names_what_could_not_learn_or_be_seen(watched):
    cov = watched.coverage()
    assert cov["frozen_modules"] == {"text_proj": E * E + E}
    assert cov["modules_only_under_no_grad"] == ["text_encoder"]
    assert cov["watched_outputs_never_fired"] == ["never"]
    assert cov["modules_never_called"] == ["head"]
    assert cov["attention_modules_present"] >= 3 and not cov["attention_modules_not_seen"], cov
    assert cov["steps_observed"] == 9 and cov["steps_measured_expensive"] == 3
    assert cov["forwards_inspected"] == 3 and cov["probe_errors"] == 0
    assert cov["compiled_modules"] == []


def test_no_mode_or_global_hook_survives_the_block(watched):
    from torch.nn.modules import module as module_mod

    assert not torch.overrides._get_current_function_mode_stack()
    assert not module_mod._global_forward_pre_hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in watched.model.modules())


def test_chance_and_loss_are_recorded(watched):
    r = watched.records
    chance = r[(r["probe"] == "loss_split") & (r["metric"] == "chance")]["value"]
    assert chance.iloc[0] == pytest.approx(math.log(B))


def test_compiled_model_is_watched_and_what_was_not_seen_is_said():
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return self.b(self.a(x).softmax(-1))

    model = Small()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with diagnose.watch(compiled, opt, alarm="off") as w:
        for step in range(3):
            loss = compiled(torch.randn(4, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"mse": loss}, batch_size=4)
            opt.step()
    cov = w.coverage()
    assert cov["compiled_modules"] == ["<root>"] and cov["forwards_inspected"] == 0
    assert "gradient_flow" in set(w.records["probe"])  # what does not need the forward is still measured
    assert not torch.overrides._get_current_function_mode_stack()
