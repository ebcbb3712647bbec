"""`DiagnoseTrainerCallback` in a real `transformers.Trainer` over a tiny `CLIPModel` built from a config
(random weights, no download): healthy, and with the logit scale initialised at 0 (exp = 1, the softmax
over cosine logits in [-1, 1] cannot be confident; transformers issue 13430 reports the scale
initialised to 1 instead of ln(1/0.07))."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("accelerate", reason="the Trainer needs accelerate: the [hf] extra (CI installs it)")
from transformers import CLIPConfig, CLIPModel, Trainer, TrainingArguments  # noqa: E402

from diagnose.integrations.hf import DiagnoseTrainerCallback  # noqa: E402

N, B, K = 512, 32, 64  # pairs, batch, concepts


def dataset(seed=0):
    g = torch.Generator().manual_seed(seed)
    concept = torch.randint(0, K, (N,), generator=g)
    patterns = torch.randn(K, 3, 32, 32, generator=g)
    pixels = patterns[concept] + 0.3 * torch.randn(N, 3, 32, 32, generator=g)
    words = torch.randint(3, 100, (K, 8), generator=g)
    return [{"pixel_values": pixels[i], "input_ids": words[concept[i]]} for i in range(N)]


def collate(items):
    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "input_ids": torch.stack([i["input_ids"] for i in items]), "return_loss": True}


def tiny_clip(logit_scale_init=2.6592):
    cfg = CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32, logit_scale_init_value=logit_scale_init)
    torch.manual_seed(0)
    return CLIPModel(cfg)


def train(tmp_path, logit_scale_init=2.6592, steps=40, lr=1e-3):
    cb = DiagnoseTrainerCallback(out=tmp_path / "run", alarm="off", expensive_every=5)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=B, max_steps=steps,
                             learning_rate=lr, report_to=[], save_strategy="no", logging_strategy="no",
                             remove_unused_columns=False, use_cpu=True, seed=0, disable_tqdm=True,
                             dataloader_drop_last=True)
    trainer = Trainer(model=tiny_clip(logit_scale_init), args=args, train_dataset=dataset(), data_collator=collate,
                      callbacks=[cb])
    with cb:
        trainer.train()
    return cb, json.loads((tmp_path / "run" / "summary.json").read_text())


def test_healthy_tiny_clip_learns_without_error_findings(tmp_path):
    cb, s = train(tmp_path)
    run = s["runs"][0]
    assert run["steps"] == 40 and run["kind"] == "watch"
    assert run["final_loss"]["loss_contrastive"] < 0.8 * math.log(B)
    assert not [f for f in s["findings"] if f["severity"] == "error"], s["findings"]
    recs = cb.last_watch.records
    assert {"gradient_flow", "collapse", "softmax_entropy"} <= set(recs["probe"])
    assert len(recs[recs["metric"] == "update_to_param"])
    ent = set(recs[recs["probe"] == "softmax_entropy"]["target"])
    assert any("self_attn" in t for t in ent), ent  # HF attention (sdpa or eager) is observed


def test_logit_scale_that_cannot_be_confident_is_named(tmp_path):
    _, s = train(tmp_path, logit_scale_init=0.0)
    run = s["runs"][0]
    ids = {f["id"] for f in s["findings"]}
    assert "temperature_toward_1" in ids, ids
    assert run["root_causes"][0]["cause"] == "temperature", run["root_causes"]


def test_the_trainer_optimizer_reaches_the_watch_and_its_lr_the_report(tmp_path):
    """The callback hands the Trainer's optimizer to the watch (unwrapped from accelerate's wrapper): the lr
    the rules quote is the configured one (the scheduler's initial lr, not the 0 where linear decay ends)."""
    cb, s = train(tmp_path, steps=10, lr=3e-3)
    run = s["runs"][0]
    assert run["optimizer"]["lr"] == pytest.approx(3e-3)
    assert cb.last_watch.optimizer is not None and type(cb.last_watch.optimizer).__module__.startswith("torch.optim")
    lrs = cb.last_watch.records
    lrs = lrs[lrs["metric"] == "lr"]["value"]
    assert len(lrs) and lrs.max() <= 3e-3 + 1e-12  # the scheduled lr of each step
    for f in s["findings"]:
        assert "At lr None" not in f["message"]


def test_retrieval_fn_gives_the_report_held_out_recall(tmp_path):
    held_out = collate(dataset(seed=1)[:128])

    def embeds(model):
        assert not model.training and not torch.is_grad_enabled()
        out = model(pixel_values=held_out["pixel_values"], input_ids=held_out["input_ids"])
        return out.image_embeds, out.text_embeds

    cb = DiagnoseTrainerCallback(out=tmp_path / "run", alarm="off", expensive_every=5, retrieval_fn=embeds)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=B, max_steps=10,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             remove_unused_columns=False, use_cpu=True, seed=0, disable_tqdm=True,
                             dataloader_drop_last=True)
    model = tiny_clip()
    Trainer(model=model, args=args, train_dataset=dataset(), data_collator=collate, callbacks=[cb]).train()
    retrieval = json.loads((tmp_path / "run" / "summary.json").read_text())["runs"][0]["retrieval"]
    assert retrieval["chance@1"] == pytest.approx(1 / 128) and 0 <= retrieval["r@1"] <= 1
    assert model.training  # handed back in the mode it was in
