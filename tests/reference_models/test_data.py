import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference_models import ConfigError, apply_scale, build_data, load_config
from reference_models.data import SyntheticPairs


def _cfg(extra=()):
    return apply_scale(load_config("direct", ["dataset.num_train=64", "dataset.num_val=32", *extra]), "small")


def test_synthetic_is_deterministic_and_splits_differ():
    a, b = SyntheticPairs(_cfg(), "train", 0), SyntheticPairs(_cfg(), "train", 0)
    idx = torch.tensor([3, 1, 7])
    ta, xa = a.batch(idx)
    tb, xb = b.batch(idx)
    assert torch.equal(ta, tb) and torch.equal(xa, xb)
    # a sample does not depend on the batch it is drawn in
    assert torch.equal(a.batch(torch.tensor([1]))[0][0], ta[1])
    val = SyntheticPairs(_cfg(), "val", 0)
    assert not torch.allclose(val.batch(idx)[0], ta)
    assert not torch.allclose(SyntheticPairs(_cfg(), "train", 1).batch(idx)[0], ta)


def test_synthetic_knobs_set_the_statistics():
    cfg = _cfg()
    src = SyntheticPairs(cfg, "train", 0)
    tokens, text = src.batch(torch.arange(16))
    T, D = cfg.vision_encoder.num_tokens, cfg.vision_encoder.hidden_dim
    assert tokens.shape == (16, T, D) and text.shape == (16, cfg.text_encoder.hidden_dim)
    norms = tokens.norm(dim=-1)
    typical = norms[:, 1:].median()
    high = (norms[:, 1:] > 5 * typical).float().mean()
    assert float(high) == pytest.approx(cfg.dataset.synthetic.high_norm_frac, abs=0.005)
    # shared component: tokens of different images are far from orthogonal
    patches = F.normalize(tokens[:, 1:][norms[:, 1:] < 2 * typical], dim=-1)
    cos = patches[:200] @ patches[200:400].t()
    assert 0.55 < float(cos.mean()) < 0.9
    flat = SyntheticPairs(_cfg(["dataset.synthetic.shared_scale=0", "dataset.synthetic.high_norm_frac=0"]), "train", 0)
    t0, _ = flat.batch(torch.arange(16))
    p0 = F.normalize(t0[:, 1:].reshape(-1, D), dim=-1)
    assert abs(float((p0[:200] @ p0[200:400].t()).mean())) < 0.2
    # a typical token is on the scale of a residual stream: per-element RMS ~1
    assert float(typical) / D**0.5 == pytest.approx(1.0, rel=0.1)


def _high_norm_tokens(extra=()):
    cfg = _cfg(["dataset.synthetic.token_noise=0", *extra])
    tokens, _ = SyntheticPairs(cfg, "train", 0).batch(torch.arange(64))
    norms = tokens[:, 1:].norm(dim=-1)
    high = norms > 5 * norms.median()
    first = high.float().argmax(dim=1)  # one high-norm patch token per image
    return tokens[torch.arange(64), 1 + first], tokens[:, 0]


def test_high_norm_tokens_carry_global_content():
    # default (1.0): the image-dependent part of a high-norm token is the image's global (CLS) content
    high, cls = _high_norm_tokens()
    hc, cc = high - high.mean(0), cls - cls.mean(0)
    assert float(F.cosine_similarity(hc, cc, dim=-1).mean()) > 0.9
    # ... and it is a sizeable share of the token: across images they are far from identical
    hn = F.normalize(high, dim=-1)
    assert float((hn @ hn.t()).fill_diagonal_(0).sum() / (64 * 63)) < 0.95
    # 0.0 (the earlier behaviour): a constant direction plus 0.1 of the local content
    high0, cls0 = _high_norm_tokens(["dataset.synthetic.high_norm_content=0"])
    h0 = F.normalize(high0, dim=-1)
    assert float((h0 @ h0.t()).fill_diagonal_(0).sum() / (64 * 63)) > 0.999
    h0c, c0c = high0 - high0.mean(0), cls0 - cls0.mean(0)
    assert float(F.cosine_similarity(h0c, c0c, dim=-1).mean()) < 0.7
    # the knob does not touch the other tokens, nor the share of high-norm tokens
    a, _ = SyntheticPairs(_cfg(), "train", 0).batch(torch.arange(4))
    b, _ = SyntheticPairs(_cfg(["dataset.synthetic.high_norm_content=0"]), "train", 0).batch(torch.arange(4))
    same = (a - b).norm(dim=-1) < 1e-4
    assert float(same[:, 1:].float().mean()) == pytest.approx(1 - 0.02, abs=0.01)
    with pytest.raises(ConfigError, match="high_norm_content"):
        _cfg(["dataset.synthetic.high_norm_content=-1"])


def test_images_and_captions_share_concepts():
    cfg = _cfg(["dataset.synthetic.text_noise=0"])
    src = SyntheticPairs(cfg, "train", 0)
    tokens, text = src.batch(torch.arange(32))
    # the CLS token carries every concept: a least-squares map CLS -> text fits pairs, not chance
    x, y = tokens[:, 0] - tokens[:, 0].mean(0), text - text.mean(0)
    w = torch.linalg.lstsq(x, y).solution
    pred = F.normalize(x @ w, dim=-1)
    sim = pred @ F.normalize(y, dim=-1).t()
    assert float((sim.argmax(dim=1) == torch.arange(32)).float().mean()) > 0.9


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_features_file_roundtrip_and_shape_checks(tmp_path, suffix):
    cfg = apply_scale(load_config("direct"), "tiny")
    T, D, Dt = cfg.vision_encoder.num_tokens, cfg.vision_encoder.hidden_dim, cfg.text_encoder.hidden_dim
    data = {"image_tokens": torch.randn(40, T, D), "text": torch.randn(40, Dt)}
    path = tmp_path / f"feats{suffix}"
    if suffix == ".pt":
        torch.save(data, path)
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(data, str(path))
    else:
        np.savez(path, **{k: v.numpy() for k, v in data.items()})
    sets = ["dataset.source=features", f"dataset.features.path={path}", "dataset.batch_size=16"]
    train, val = build_data(apply_scale(load_config("direct", sets), "tiny"), 0)
    assert train.num_samples + val.num_samples == 40 and val.num_samples == 8
    tok, txt = train.batch(torch.arange(4))
    assert tok.shape == (4, T, D) and txt.shape == (4, Dt)
    with pytest.raises(ConfigError, match=r"'image_tokens' has shape \(40, 37, 32\), expected \(N, 577, 1024\)"):
        build_data(load_config("direct", sets), 0)


def test_features_file_errors(tmp_path):
    cfg = apply_scale(load_config("direct"), "tiny")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="bad.pt: cannot read tensors"):
        build_data(apply_scale(load_config("direct", ["dataset.source=features", f"dataset.features.path={bad}"]),
                               "tiny"), 0)
    with pytest.raises(ConfigError, match="file not found"):
        build_data(apply_scale(load_config("direct", ["dataset.source=features", "dataset.features.path=/nope.pt"]),
                               "tiny"), 0)
    missing = tmp_path / "m.pt"
    torch.save({"image_tokens": torch.randn(4, 37, 32)}, missing)
    with pytest.raises(ConfigError, match="missing tensor 'text'"):
        build_data(apply_scale(load_config("direct", ["dataset.source=features", f"dataset.features.path={missing}"]),
                               "tiny"), 0)
    assert cfg.dataset.source == "synthetic"
