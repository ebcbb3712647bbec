"""Fine-tuning from a finished run's checkpoint while restoring its optimizer state. Stage 1 trained the aligner
on other pairs with a cosine schedule that annealed the lr to 1e-6 and saved {"model", "optimizer"}. For stage 2
the user builds AdamW(lr=1e-3) for the new pairs and "resumes" with model.load_state_dict(...) AND
opt.load_state_dict(ckpt["optimizer"]) to keep Adam's moments: optimizer.load_state_dict also restores each
param group's lr, so stage 2 runs at the annealed 1e-6 the whole time, the requested 1e-3 is silently
discarded, and the loss on the new pairs stays where stage 1 left it. Threads: bghira/SimpleTuner#163 ("I noticed
the learning rate stays the same as previous training session if continue from a checkpoint, even if I set it to a
different value" ... "the learning rate / optimizer states are loaded from the ckpt"); 
aladdinpersson/Machine-Learning-Collection#119 (the repo's loader: "If we don't do this then it will just have
learning rate of old checkpoint and it will lead to many hours of debugging", then `param_group["lr"] = lr`);
huggingface/transformers#9099 ("this ignores the user's set learning rate, meaning it continues with some saved
learning rate").
Fix: after opt.load_state_dict, set each param group's lr back to the stage-2 lr (1e-3).
Validated without the tool (seeds 0,1,2; 90 steps; batch 64; final = mean of the last 5 steps): fault final loss
7.098/5.953/4.619 (= 1.71/1.43/1.11 ln(B), ln(64) = 4.1589); fixed 0.179/0.206/0.186 (= 0.043/0.050/0.045 ln(B)).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("bghira/SimpleTuner#163", "aladdinpersson/Machine-Learning-Collection#119", "huggingface/transformers#9099")
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint_resume"
BATCH = 64
LR = 1e-3


def stage1(seed: int, steps: int = 30) -> bytes:
    """The earlier run being resumed: other pairs, cosine-annealed to 1e-6, model + optimizer saved."""
    torch.manual_seed(seed + 50)
    tokens, texts = token_pairs(1024, seed=seed + 50)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-6)
    for _ in range(steps):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    return buf.getvalue()


def train(watch, steps: int = 90, seed: int = 0, fixed: bool = False) -> None:
    ckpt = torch.load(io.BytesIO(stage1(seed)), weights_only=True)
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])  # BUG: also restores the annealed lr (1e-6)
    if fixed:
        for g in opt.param_groups: g["lr"] = LR
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
