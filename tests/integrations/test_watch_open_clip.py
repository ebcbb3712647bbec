"""`diagnose.watch` around a user's own loop on open_clip's CLIP (open-clip-torch from PyPI, a tiny config
registered through `open_clip.add_model_config`, `create_model(..., pretrained=None)`: random weights, no
download), trained on CPU with open_clip's own `ClipLoss` and the model's own `logit_scale`. Healthy
control, a detached text tower, and a learning rate that collapses the embeddings.

Why a torchvision stand-in: open_clip imports torchvision at import time only for its image transforms
and `FrozenBatchNorm2d`, neither used here, and no torchvision wheel loads beside the CPU torch of this
project (PyPI's is a CUDA build: "operator torchvision::nms does not exist"). So open-clip-torch is
installed with --no-deps (`requirements/peers-nodeps.txt`) and, only when `import torchvision` fails,
`_torchvision_standin` puts those names in place for `import open_clip` and removes them again. The
model code under test (open_clip's `model.py`, `transformer.py`, `loss.py`) is open_clip's own."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

import diagnose
from tests.watch_checks import (
    assert_healthy_run,
    assert_report_rebuilds,
    assert_top_cause,
    summary,
)

from ._torchvision_standin import import_open_clip

import_open_clip()
open_clip = pytest.importorskip(
    "open_clip", reason="open-clip-torch: pip install --no-deps -r requirements/peers-nodeps.txt")

N, B, IMG, PATCH, CTX, ATTRS, VALUES, E = 1024, 32, 16, 8, 8, 4, 8, 32
VOCAB = ATTRS * VALUES + 2  # attribute words, then <start>, <end> (the highest id: open_clip pools at argmax)
TINY = {"embed_dim": E,
        "vision_cfg": {"image_size": IMG, "patch_size": PATCH, "width": 32, "head_width": 16, "layers": 2},
        "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2}}
MODEL = "diagnose-tiny-clip"


def data(seed: int = 0):
    """Each pair has ATTRS attributes of VALUES values: the image is the sum of their patterns plus noise,
    the caption names them (<start> a1 a2 a3 a4 <pad> <pad> <end>)."""
    g = torch.Generator().manual_seed(seed)
    attrs = torch.randint(0, VALUES, (N, ATTRS), generator=g)
    patterns = torch.randn(ATTRS, VALUES, 3, IMG, IMG, generator=g)
    images = sum(patterns[a, attrs[:, a]] for a in range(ATTRS)) / math.sqrt(ATTRS)
    images = images + 0.5 * torch.randn(N, 3, IMG, IMG, generator=g)
    texts = torch.zeros(N, CTX, dtype=torch.long)
    texts[:, 0], texts[:, -1] = VOCAB - 2, VOCAB - 1
    texts[:, 1:1 + ATTRS] = attrs + VALUES * torch.arange(ATTRS)
    return images, texts


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("open_clip_config") / f"{MODEL}.json"
    path.write_text(json.dumps(TINY))
    open_clip.add_model_config(path)
    return MODEL


def train(out, model_name, lr=1e-3, detach_text=False, steps=40, alarm="off", seed=0, **watch_kwargs):
    torch.manual_seed(seed)
    images, texts = data(seed)
    model = open_clip.create_model(model_name, pretrained=None, output_dict=True)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    with diagnose.watch(model, opt, out=out, name="user", alarm=alarm, expensive_every=5, **watch_kwargs) as w:
        for step in range(steps):
            idx = torch.randint(0, N, (B,))
            o = model(images[idx], texts[idx])
            img, txt, scale = o["image_features"], o["text_features"], o["logit_scale"]
            if detach_text:  # the injected fault: the text tower's output leaves the graph
                txt = txt.detach()
            loss = loss_fn(img, txt, scale)
            logits, _ = loss_fn.get_logits(img, txt, scale)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=images[idx].flatten(1), extras={"logit_scale": scale})
            opt.step()
            with torch.no_grad():  # as open_clip's training loop does after each step
                model.logit_scale.clamp_(0, math.log(100))
        with torch.no_grad():
            o = model(images[:256], texts[:256])
            w.evaluate_retrieval(o["image_features"], o["text_features"])
    return w



@pytest.fixture(scope="module")
def healthy(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("healthy") / "run"
    return out, train(out, tiny_config)


def test_healthy_control_learns_without_error_findings_and_records_everything(healthy):
    out, w = healthy
    run = assert_healthy_run(out, w, B)
    assert run["verdict"]["learned"], run["verdict"]


def test_peer_attention_is_observed(healthy):
    """open_clip's blocks call `nn.MultiheadAttention(..., need_weights=False)`: on the expensive steps the
    watch asks the module for its per-head weights (and hands the caller None, as asked), so entropy is
    recorded under each block's `attn`, with `.head<h>` rows, in both towers."""
    _, w = healthy
    ent = w.records[(w.records["probe"] == "softmax_entropy") & (w.records["metric"] == "entropy_mean")]
    targets = set(ent["target"].unique())
    blocks = [f"{tower}.resblocks.{i}.attn" for tower, cfg in (("visual.transformer", "vision_cfg"),
                                                               ("transformer", "text_cfg"))
              for i in range(TINY[cfg]["layers"])]
    for attn in blocks:
        assert {attn, f"{attn}.head0", f"{attn}.head1"} <= targets, sorted(targets)
        assert len(ent[ent["target"] == attn]) == 40 // 5  # every expensive step
    cov = w.coverage()
    assert cov["attention_modules_not_seen"] == [] and cov["attention_modules_seen"] == cov["attention_modules_present"]
    assert set(blocks) <= set(cov["softmax_targets"])


def test_detached_text_tower_is_named_as_the_root_cause(tmp_path, tiny_config):
    out = tmp_path / "run"
    train(out, tiny_config, detach_text=True)
    assert_top_cause(out, "no_gradient_path", "no_gradient")


def test_learning_rate_that_collapses_the_embeddings_is_named(tmp_path, tiny_config):
    out = tmp_path / "run"
    w = train(out, tiny_config, lr=0.3, budget=None)  # the rules every 5 steps (see tests/engine/test_watch.py)
    s = summary(out)
    run = s["runs"][0]
    assert not run["verdict"]["learned"], run["verdict"]
    collapsed = {f["target"] for f in s["findings"] if f["id"] == "embedding_collapse" and f["severity"] == "error"}
    assert {"image", "text"} <= collapsed, s["findings"]
    assert run["root_causes"][0]["cause"] == "learning_rate_too_high", run["root_causes"]
    assert run["alarms"] and run["alarms"][0]["step"] <= 20 and w.alarms[0].step == run["alarms"][0]["step"]


def test_the_torchvision_stand_in_does_not_outlive_the_import():
    tv = sys.modules.get("torchvision")
    assert tv is None or not getattr(tv, "__standin__", False)
    assert not [m for m in sys.modules
                if m.startswith("torchvision.") and getattr(sys.modules[m], "__standin__", False)]


def test_report_rebuilds_a_watch_run_directory(healthy):
    assert_report_rebuilds(healthy[0])
