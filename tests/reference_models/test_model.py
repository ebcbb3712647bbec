import pytest
import torch

from reference_models import apply_scale, build_model, load_config
from reference_models.perceiver import init_latents


def test_seed_verbatim_latent_init_has_std_002():
    torch.manual_seed(0)
    latents = init_latents(64, 1024, "seed", 0.02)
    assert float(latents.detach().std()) == pytest.approx(0.02, rel=0.02)
    assert float(init_latents(64, 1024, "randn", 0.02).detach().std()) == pytest.approx(1.0, rel=0.02)
    assert float(init_latents(64, 1024, "trunc_normal", 0.02).detach().abs().max()) <= 0.04 + 1e-6
    assert float(init_latents(4, 8, "zeros", 0.02).detach().abs().sum()) == 0.0


def _shapes(model, tokens, text):
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, tuple(o.shape)))
             for n, m in model.named_modules() if n]
    try:
        out = model(tokens, text)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


def test_direct_shapes_match_seed_diagram_at_full_scale():
    cfg = load_config("direct")
    model = build_model(cfg)
    seen, out = _shapes(model, torch.randn(2, 577, 1024), torch.randn(2, 768))
    assert seen["vision.projector"] == (2, 577, 4096)
    assert seen["vision.pool.softmax"] == (2, 577)
    assert seen["vision.pool"] == (2, 4096)
    assert out["image"].shape == (2, 4096) and out["text"].shape == (2, 4096)
    assert torch.allclose(out["image"].norm(dim=-1), torch.ones(2), atol=1e-5)


def test_perceiver_shapes_match_seed_diagram_at_full_scale():
    cfg = load_config("perceiver")
    model = build_model(cfg)
    seen, out = _shapes(model, torch.randn(2, 577, 1024), torch.randn(2, 768))
    assert seen["vision.projector"] == (2, 577, 1024)
    assert seen["vision.perceiver"] == (2, 64, 1024)
    assert seen["vision.perceiver.layers.0.cross_attn.softmax"] == (2, 8, 64, 577)
    assert seen["vision.perceiver.layers.3.self_attn.softmax"] == (2, 8, 64, 64)
    assert seen["vision.final_projector"] == (2, 64, 4096)
    assert out["image"].shape == (2, 4096)
    assert "vision.pool.softmax" not in seen  # mean pooling, the seed's default


def test_attention_pooling_after_perceiver_is_fix_4():
    cfg = apply_scale(load_config("perceiver", ["vision_encoder.perceiver_pooling=attention"]), "tiny")
    seen, _ = _shapes(build_model(cfg), torch.randn(3, 37, 32), torch.randn(3, 24))
    assert seen["vision.pool.softmax"] == (3, 4)  # softmax over the 4 latents


def test_small_scale_keeps_structure():
    full, small = load_config("perceiver"), apply_scale(load_config("perceiver"), "small")
    assert small.vision_encoder.perceiver_num_layers == full.vision_encoder.perceiver_num_layers
    assert small.vision_encoder.perceiver_num_heads == full.vision_encoder.perceiver_num_heads
    ratio_full = full.vision_encoder.num_tokens / full.vision_encoder.perceiver_num_latents
    ratio_small = small.vision_encoder.num_tokens / small.vision_encoder.perceiver_num_latents
    assert ratio_small == pytest.approx(ratio_full, rel=0.05)
    assert small.model.projection_dim / small.vision_encoder.hidden_dim == 4
    assert small.losses.mrl_dims[-1] == small.model.projection_dim
    assert small.scale == "small" and full.scale == "full"


def test_logit_scale_is_open_clip_convention():
    import math

    model = build_model(load_config("direct"))
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert float(model.logit_scale.detach().exp()) == pytest.approx(100.0)


def test_reduced_scale_transfers_lr_to_weight_matrices_only():
    from reference_models.train import make_optimizer

    cfg = apply_scale(load_config("perceiver"), "tiny")
    assert cfg.optimization.matrix_lr_multiplier == 32
    model = build_model(cfg)
    opt = make_optimizer(model, cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["vision.projector.weight"])]["lr_mult"] == 32
    assert by_param[id(named["vision.projector.weight"])]["weight_decay"] == pytest.approx(0.05 / 32)
    for name in ("vision.perceiver.latents", "vision.projector.bias", "logit_scale",
                 "vision.perceiver.layers.0.cross_attn.norm.weight"):
        assert by_param[id(named[name])]["lr_mult"] == 1.0, name
    assert by_param[id(named["vision.perceiver.latents"])]["weight_decay"] == 0.05
    assert by_param[id(named["logit_scale"])]["weight_decay"] == 0.0
    assert apply_scale(load_config("perceiver"), "full").optimization.matrix_lr_multiplier == 1


def test_lr_transfer_can_be_switched_off():
    cfg = apply_scale(load_config("perceiver", ["optimization.scale_transfers_lr=false"]), "small")
    assert cfg.optimization.matrix_lr_multiplier == 1.0
    cfg = apply_scale(load_config("perceiver", ["optimization.matrix_lr_multiplier=0.5"]), "small")
    assert cfg.optimization.matrix_lr_multiplier == 4.0
