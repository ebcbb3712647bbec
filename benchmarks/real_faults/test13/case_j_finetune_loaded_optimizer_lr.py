"""A user fine-tunes an aligner on a new dataset starting from a checkpoint of an earlier run, which trained on other
pairs with a cosine schedule down to eta_min=1e-6 and saved `{"model": ..., "optimizer": ...}`. The new script builds
`AdamW(model.parameters(), lr=1e-3)`, then loads both state dicts, as the PyTorch checkpoint recipe shows.
`optimizer.load_state_dict` also restores each param group's `lr`, so the configured 1e-3 is silently replaced by the
1e-6 the old schedule ended on; no scheduler runs in the new job, and the fine-tuning moves the weights by almost
nothing: the loss on the new pairs stays near chance. The SpeeQ issue: "Currently, the optimizer parameters get
loaded if a pre-trained model passed, it would be better if we Add an option to reset the optimizer learning rate
when loading it".
Thread: msalhab96/SpeeQ#46 ("reset the optimizer learning rate when loading it").
Fix: reset the loaded optimizer's learning rate to the configured one (`group["lr"] = LR` for each param group).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss 5.569/4.621/4.668 (= 1.61/1.33/1.35 ln(B), ln(32) = 3.466); fixed 0.101/0.104/0.121 (= 0.03/0.03/0.03 ln(B), ln(32) = 3.466).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os
import tempfile

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("msalhab96/SpeeQ#46",)
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint_resume"
BATCH = 32
LR = 1e-3


def earlier_run_checkpoint(seed, steps=40):
    """The earlier run: other pairs, cosine schedule to eta_min=1e-6, model and optimizer saved at the end."""
    torch.manual_seed(seed + 500)
    tokens, texts = token_pairs(1024, seed=seed + 500)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-6)
    for _ in range(steps):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    path = os.path.join(tempfile.mkdtemp(), "last.pt")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    return path


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    ckpt_path = earlier_run_checkpoint(seed)
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)                # the new dataset
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    ckpt = torch.load(ckpt_path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])                      # also restores lr = 1e-6
    if fixed:
        for group in opt.param_groups:
            group["lr"] = LR
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
