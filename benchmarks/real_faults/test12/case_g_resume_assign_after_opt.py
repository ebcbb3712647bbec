"""Resuming with load_state_dict(..., assign=True) after the optimizer was built. To resume quickly (and to load
big checkpoints without copies) the user builds model and optimizer as usual, then restores the stage-1 checkpoint
with `model.load_state_dict(state, assign=True)`. With assign=True the module's parameters are REPLACED by the
checkpoint's tensors, while the optimizer still holds the tensors it was built with: every step updates the
orphaned old tensors, the model the loop runs never changes, and the loss stays where the checkpoint left it.
Thread: pytorch/tutorials#2522 (the PyTorch recipe: "A caveat here is that since optimizers hold a reference to
nn.Module.parameters(), the optimizer must be initialized after the module is loaded from state dict if
assign=True is passed" ... "This MUST be done AFTER the load_state_dict with assign").
Fix: load the checkpoint without assign=True (copy into the existing parameters), or build the optimizer after it.
Validated without the tool (seeds 0,1,2; 90 steps; batch 64; final = mean of the last 5 steps): fault final loss
6.184/5.318/4.758 (= 1.49/1.28/1.14 ln(B), ln(64) = 4.1589); fixed 0.226/0.212/0.211 (= 0.054/0.051/0.051 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("pytorch/tutorials#2522",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64


def stage1_checkpoint(seed: int) -> bytes:
    """The checkpoint being resumed: an earlier run's weights (here the stage-1 init, saved to bytes)."""
    torch.manual_seed(seed + 100)
    buf = io.BytesIO()
    torch.save({"model": PerceiverAligner().state_dict(), "step": 0}, buf)
    return buf.getvalue()


def train(watch, steps: int = 90, seed: int = 0, fixed: bool = False) -> None:
    ckpt = stage1_checkpoint(seed)
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    state = torch.load(io.BytesIO(ckpt), weights_only=True)
    model.load_state_dict(state["model"], assign=not fixed)  # BUG: assign=True after the optimizer exists
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
