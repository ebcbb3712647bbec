"""Resuming an alignment run from its checkpoint. The script builds the model and the optimizer first, then,
when a checkpoint exists, calls its `load_model(path)` helper, which constructs a NEW model and loads the
weights into it, and loads the optimizer state into the optimizer that was built earlier. That optimizer
still holds the parameters of the first, discarded model object: `opt.step()` updates tensors nobody uses,
`opt.zero_grad()` never clears the new model's gradients, and the resumed run sits at the loss it had when
the checkpoint was written (the first job was pre-empted after its first checkpoint, at step 5).
Threads: kitzeslab/opensoundscape#351 ("Found the bug. It's caused by overwriting the optimizer_params
attribute with the one from the old model ... that list is somehow out of date in that it corresponds to the
old object, not the current one"); Lightning-AI/pytorch-lightning#19955 ("the model parameters shifted under a
created optimizer ... the optimizer should be created after the model is done being modified, to ensure that
the latest parameters are what get optimized").
Fix: load the weights into the model the optimizer holds, `model.load_state_dict(ckpt["model"])`, instead of
`model = load_model(path)`.
Validated without the tool (seeds 0,1,2; 5 steps before the checkpoint, then 80 resumed steps watched;
batch 64; final = mean of the last 5 steps): fault final loss 3.100/2.905/2.882 (= 0.745/0.698/0.693 ln(64));
fixed 0.156/0.154/0.177 (= 0.037/0.037/0.043).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os, tempfile
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("kitzeslab/opensoundscape#351", "Lightning-AI/pytorch-lightning#19955")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64
LR = 1e-3
SAVE_EVERY = 5


def load_model(path) -> ResamplerAligner:
    model = ResamplerAligner()
    model.load_state_dict(torch.load(path)["model"])
    return model


def run(model, opt, tokens, texts, start, stop, path, w=None):
    for step in range(start, stop):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        opt.zero_grad()
        loss.backward()
        if w is not None:
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
        opt.step()
        if (step + 1) % SAVE_EVERY == 0:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1}, path)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "last.pt")
        # the first job: pre-empted right after its first checkpoint
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=LR)
        run(model, opt, tokens, texts, 0, SAVE_EVERY, path)
        # the resumed job: same script, a checkpoint exists now
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=LR)
        start = 0
        if os.path.exists(path):
            ckpt = torch.load(path)
            if fixed:
                model.load_state_dict(ckpt["model"])      # the fix
            else:
                model = load_model(path)                  # the bug: a new model object
            opt.load_state_dict(ckpt["optimizer"])
            start = ckpt["step"]
        with watch(model, opt, batch_size=BATCH) as w:
            run(model, opt, tokens, texts, start, start + steps, path, w)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
