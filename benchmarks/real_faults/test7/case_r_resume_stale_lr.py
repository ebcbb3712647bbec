"""Fine-tuning from an earlier run's checkpoint with the repo's `--resume` path: the script builds the
optimizer with the new `--lr`, then calls `opt.load_state_dict(ckpt["optimizer"])`, which restores the saved
param_groups, lr included. The earlier run ended its cosine schedule at eta_min=1e-6, so the fine-tune on the new
corpus runs at lr 1e-6 instead of the requested 5e-4 and the perceiver aligner stays where the other corpus left it
(at or above chance on ours).
Thread: naoto0804/pytorch-inpainting-with-partial-conv#11 ("When you want to resume your model for finetuning, you
overwritting new optimizer with the old one, and smaller lr is not applied ... for param_group in
optimizer.param_groups: param_group['lr'] = lr"); sconlyshootery/FeatDepth#12 ("setting a different learning rate in
the cfg file doesn't propagate to the optimizer, and it uses the learning rate of the checkpoint").
Fix: after `opt.load_state_dict(...)`, set `g["lr"] = LR` for every param group.
Validated without the tool (seeds 0,1,2; 20-step earlier run on another corpus, then 80 fine-tune steps; batch 64;
final = mean of the last 5 steps): fault final loss 5.0376/5.8601/5.1535 (= 1.211/1.409/1.239 ln(64)); fixed
0.4724/0.6789/0.4506 (= 0.114/0.163/0.108 ln(64)).
Ground truth: learning_rate_too_low (lr 1e-6 held constant for the whole fine-tune).
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("naoto0804/pytorch-inpainting-with-partial-conv#11", "sconlyshootery/FeatDepth#12")
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint_resume"
BATCH = 64
LR = 5e-4


def step_on(model, tokens, texts, idx):
    img, txt = model(tokens[idx], texts[idx])
    logits = model.logit_scale.exp() * img @ txt.t()
    return img, txt, logits, clip_loss(logits)


def stage1_checkpoint(seed: int, steps: int = 20) -> bytes:
    """The earlier run (another corpus): cosine schedule to eta_min, checkpoint saved at its end."""
    tokens, texts = token_pairs(1024, seed=1000 + seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-6)
    for _ in range(steps):
        _, _, _, loss = step_on(model, tokens, texts, torch.randint(0, len(tokens), (BATCH,)))
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    return buf.getvalue()


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    ckpt = torch.load(io.BytesIO(stage1_checkpoint(seed)), weights_only=True)
    tokens, texts = token_pairs(1024, seed=seed)  # our corpus
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)  # --lr for the fine-tune
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])  # --resume: also restores param_groups' lr (1e-6)
    if fixed:
        for g in opt.param_groups: g["lr"] = LR  # the fix: apply the requested lr after loading
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt, logits, loss = step_on(model, tokens, texts, idx)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
