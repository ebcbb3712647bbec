"""A user trains the aligner with a wrapper optimizer of the kind Bayesian/SAM-style libraries ship: the wrapper keeps
the AdamW that really updates the weights inside its own state (`self.state["__base_optimizer"] = base_optimizer`)
and its `step()` delegates to it. The run is pre-empted after a few steps; the user resumes the usual way: rebuild the
model and the optimizer, `model.load_state_dict(ckpt["model"])`, `optimizer.load_state_dict(ckpt["optimizer"])`.
`Optimizer.load_state_dict` copies every non-parameter state entry as it was pickled, so the live base optimizer is
replaced by the unpickled one, whose param groups hold the checkpoint's own copies of the tensors, not the resumed
model's parameters. From then on backward fills the model's gradients, `step()` updates tensors nothing uses, and
the resumed model never moves from the early checkpoint: the loss stays near ln(B). The thread: "the loss does not
converge after reloading (the loss still converges if the model is initialized without reloading). I guess maybe
it's the issue of setting `__base_optimizer` as part of the optimizer state so when I run
`optimizer.load_state_dict(ckpt['optimizer_state_dict'])` the state of base optimizer was directly replaced".
Thread: Feuermagier/Beyond_Deep_Ensembles#2 ("Training loss does not converge after reloading checkpoint to continue
training").
Fix: the thread's, keep the base optimizer as a class member (`self.base_optimizer = base_optimizer`) and load the
state dicts of the optimizer and its base optimizer separately.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.748/3.689/3.703 (= 1.08/1.06/1.07 ln(B), ln(32) = 3.466); fixed 0.099/0.090/0.082 (= 0.03/0.03/0.02 ln(B), ln(32) = 3.466).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Feuermagier/Beyond_Deep_Ensembles#2",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 32
PREEMPTED_AT = 2  # steps the first run got through before it was pre-empted


class WrappedOptimizer(torch.optim.Optimizer):
    """A wrapper optimizer delegating to a base optimizer (as BNN / SAM-style wrappers do)."""

    def __init__(self, params, base_cls=torch.optim.AdamW, member=False, **kw):
        params = list(params)
        super().__init__(params, dict(kw))
        base = base_cls(params, **kw)
        if member:                                   # the thread's fix
            self.base_optimizer = base
        else:
            self.state["__base_optimizer"] = base

    @property
    def base(self):
        return self.base_optimizer if hasattr(self, "base_optimizer") else self.state["__base_optimizer"]

    @torch.no_grad()
    def step(self, closure=None):
        return self.base.step(closure)


def _batch(tokens, texts, g):
    idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
    return tokens[idx], texts[idx]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)

    # the first run, pre-empted after a few steps; its last checkpoint
    model = ResamplerAligner()
    opt = WrappedOptimizer(model.parameters(), member=fixed, lr=1e-3, weight_decay=0.0)
    for _ in range(PREEMPTED_AT):
        x, t = _batch(tokens, texts, g)
        img, txt = model(x, t)
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad()
        loss.backward()
        opt.step()
    buf = io.BytesIO()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    if fixed:
        ckpt["base_optimizer"] = opt.base_optimizer.state_dict()
    torch.save(ckpt, buf)

    # the resumed run
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model = ResamplerAligner()
    model.load_state_dict(ckpt["model"])
    opt = WrappedOptimizer(model.parameters(), member=fixed, lr=1e-3, weight_decay=0.0)
    opt.load_state_dict(ckpt["optimizer"])
    if fixed:
        opt.base_optimizer.load_state_dict(ckpt["base_optimizer"])
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            x, t = _batch(tokens, texts, g)
            img, txt = model(x, t)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=x, extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
