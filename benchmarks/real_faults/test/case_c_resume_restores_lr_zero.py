"""I fine-tune a checkpoint on a new dataset at a constant lr of 1e-3 and, to "resume properly", load
the old optimizer state too. The previous run ended its schedule at lr 0, and
`optimizer.load_state_dict` restores the param groups with that lr, silently overriding the 1e-3 I
passed to the constructor: every step is a zero step and the loss never moves. Thread(s):
pytorch/examples#816 ("If you resume from a checkpoint and want to run with a new learning rate, the
saved learning rate will overwrite what you specify on the command line"); facebookresearch/DPR#99
("I load in the checkpoint and resume the training with my own dataset, and the learning rate is 0";
maintainer: "the checkpoint's learning rate schedule being loaded from saved state and thinking it
should already be zero upon resuming"); pytorch/pytorch#156846 ("Can't alter the learning rate
though loading optimizer states"). Fix: set the lr again after loading the optimizer state.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean of the last 5 losses): fault 5.174,
4.967, 4.805 vs ln(B) = 4.159 (fails outright: restored lr 0.0, initial_lr 1e-3, weights never move);
fixed 0.336, 0.317, 0.374.
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # so `python case.py` finds common
import io

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("pytorch/examples#816", "facebookresearch/DPR#99", "pytorch/pytorch#156846")
CAUSE = "lr_schedule"
FAMILY = "checkpoint_resume"
BATCH = 64
LR = 1e-3


def previous_run(seed: int, steps: int = 20) -> bytes:
    """The earlier run (other data), linear decay to 0 over its steps, saved as usual."""
    tokens, texts = token_pairs(1024, seed=seed + 1000)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=steps)
    g = torch.Generator().manual_seed(seed + 1000)
    for _ in range(steps):
        idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        clip_loss(model.logit_scale.exp() * img @ txt.t()).backward()
        opt.step(); opt.zero_grad(); sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    return buf.getvalue()


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    ckpt = torch.load(io.BytesIO(previous_run(seed)), weights_only=True)
    tokens, texts = token_pairs(2048, seed=seed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    model.load_state_dict(ckpt["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    opt.load_state_dict(ckpt["optimizer"])  # brings back the old param groups, lr included
    if fixed:
        for group in opt.param_groups: group["lr"] = LR
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
