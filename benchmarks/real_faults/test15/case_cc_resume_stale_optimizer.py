"""Resuming an image-text alignment run from a checkpoint: the user's script builds the model and its AdamW
first (`net = ResamplerAligner(); opt = AdamW(net.parameters())`), then, in the resume branch, creates a
fresh `model`, loads the checkpoint's weights into it and loads the optimizer state into `opt`. Every step
back-propagates into `model` and calls `opt.step()`, but `opt` still holds the parameters of `net`, the
instance built before the resume: the loaded model never changes and the CLIP loss stays where it was.

Thread: NVIDIA/Megatron-LM#174 ("optimizer is built before loading checkpoint and holds the parameters of a randomly initialized model")
Thread: pytorch/tutorials#1430 ("optimizer loaded parameters of net ... I think optimizer should be loaded parameters of model")
Fix: build the optimizer over the resumed instance: `opt = AdamW(model.parameters(), ...)` (then load its state).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss 3.349/3.479/4.293 (= 0.81/0.84/1.03 ln(B)); fixed 0.123/0.123/0.127 (= 0.03/0.03/0.03 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("NVIDIA/Megatron-LM#174", "pytorch/tutorials#1430")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64
LR = 1e-3


def _previous_session(tokens, texts, seed: int) -> bytes:
    """The run that wrote the checkpoint: two steps, then torch.save (model, optimizer, step)."""
    g = torch.Generator().manual_seed(seed + 1000)
    m = ResamplerAligner()
    o = torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.1)
    for _ in range(2):
        i = torch.randint(0, len(tokens), (BATCH,), generator=g)
        img, txt = m(tokens[i], texts[i])
        loss = clip_loss(m.logit_scale.exp() * img @ txt.t())
        o.zero_grad(); loss.backward(); o.step()
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "optimizer": o.state_dict(), "step": 2}, buf)
    return buf.getvalue()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    ckpt_bytes = _previous_session(tokens, texts, seed)

    net = ResamplerAligner()
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.1)

    # --resume: rebuild the model and restore it from the checkpoint
    ckpt = torch.load(io.BytesIO(ckpt_bytes), weights_only=True)
    model = ResamplerAligner()
    model.load_state_dict(ckpt["model"])
    if fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    opt.load_state_dict(ckpt["optimizer"])  # the bug: without the line above, opt still steps `net`, not `model`

    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(ckpt["step"], ckpt["step"] + steps):
            i = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[i], texts[i])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[i], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
