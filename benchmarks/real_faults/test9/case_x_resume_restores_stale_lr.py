"""Resuming from a checkpoint whose optimizer state carries the finished schedule's learning rate. A first run
of the aligner ended its cosine schedule (lr annealed to ~1e-7) and was checkpointed with model + optimizer
state. The user resumes to keep training with a fresh `--lr 1e-3`: builds `Adam(model.parameters(), lr=1e-3)`
and then calls `opt.load_state_dict(ckpt["optimizer"])`, which restores the param groups *including their lr*,
so the resumed run silently trains at the annealed ~1e-7 and the loss stays where the short first run left it.
The public reports: the resume path "loads not only the checkpoint but also the optimizer including e.g. the
learning rate ... we just ignore the r1 learning rate from the user", and frameworks add an option to
"over-write the learning rate and scheduler ... when you want to resume a training run from a checkpoint".
Thread: alex-hh/profam#483 ("Adds the option to over-write the learning rate and scheduler using
on_load_checkpoint() callback"); tensorflow/tensorflow#33842 ("Optimizer state is getting restored while loading
weights from model checkpoint ... when you compile model with different learning rate ... it doesn't get updated").
Fix: after `opt.load_state_dict(...)`, set `g["lr"] = lr` for every param group.
Validated without the tool (seeds 0,1,2; 8 steps of the first run, then 80 resumed steps; batch 64; final = mean
of the last 5 resumed steps): fault final loss 3.270/3.060/3.064
(= 0.79/0.74/0.74 ln(B), ln(64) = 4.1589); fixed 0.171/0.156/0.166 (= 0.041/0.038/0.040 ln(B)).
Ground truth: learning_rate_too_low.
"""
import io, sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("alex-hh/profam#483", "tensorflow/tensorflow#33842")
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint_resume"
BATCH = 64


def first_run(tokens, texts, steps=8):
    """The earlier job: a short run whose cosine schedule annealed the lr, saved as model + optimizer state."""
    model = ResamplerAligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-7)
    for _ in range(steps):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False, lr: float = 1e-3) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    ckpt = torch.load(first_run(tokens, texts), weights_only=True)
    model = ResamplerAligner()
    model.load_state_dict(ckpt["model"])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    opt.load_state_dict(ckpt["optimizer"])  # restores the annealed lr too
    if fixed:
        for g in opt.param_groups: g["lr"] = lr
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
