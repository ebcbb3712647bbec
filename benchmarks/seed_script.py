"""The seed's situation as a user's own script: a plain training loop over our reference Perceiver config
(small scale), with `diagnose.watch` around it, not through our CLI. For `diagnose ablate --`:

    diagnose ablate --seeds 3 --fix lr_down --fix reinit:std=1 \
        --variant "batch=--set dataset.batch_size=128" \
        --variant "pooling=--set vision_encoder.perceiver_pooling=attention" \
        -- python benchmarks/seed_script.py

the seed's four claims, tested in this script as the reference `diagnose ablate --config perceiver` tests
them in ours: lr 10x lower (through the watch), latents redrawn at N(0, 1) (the seed's `randn` alone),
batch 2x and attention pooling (script arguments: only the script can change them).
"""

from __future__ import annotations

import argparse

import torch

import diagnose
from reference_models import AlignmentLoss, apply_scale, build_data, build_model, load_config
from reference_models.train import batches, embed, lr_at, make_optimizer, steps_per_epoch

p = argparse.ArgumentParser()
p.add_argument("--config", default="perceiver")
p.add_argument("--set", action="append", default=[], help="dotted.key=value")
p.add_argument("--steps", type=int, default=80)
p.add_argument("--out", default=None)
args = p.parse_args()

cfg = apply_scale(load_config(args.config, args.set), "small")
torch.manual_seed(cfg.seed)
train, val = build_data(cfg, cfg.seed)
model = build_model(cfg).train()
opt = make_optimizer(model, cfg)
criterion = AlignmentLoss(cfg.losses)
mrl_gen = torch.Generator().manual_seed(cfg.seed + 1)
B = cfg.dataset.batch_size
horizon = max(args.steps, steps_per_epoch(cfg, train) * cfg.optimization.epochs)
stream = batches(train, B, torch.initial_seed() % 2**31)

with diagnose.watch(model, opt, out=args.out, batch_size=B, latents=["vision.perceiver.latents"]) as w:
    for step in range(args.steps):
        _, idx = next(stream)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, horizon, cfg) * g.get("lr_mult", 1.0)
        tokens, text = train.batch(idx)
        out = model(tokens, text)
        loss = criterion(out["image"], out["text"], out["logit_scale"], mrl_gen)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        w.observe(step, losses={"clip": loss.components["loss_clip"], "mrl": loss.components["loss_mrl"],
                                "total": loss.total},
                  weights={k.removeprefix("loss_"): v for k, v in loss.weights.items()},
                  embeddings={"image": out["image"], "text": out["text"]}, logits=loss.logits, inputs=tokens,
                  extras={"logit_scale": out["logit_scale"]})
        opt.step()
        model.clamp_logit_scale()
    model.eval()
    w.evaluate_retrieval(*embed(model, val, B, "cpu"))
