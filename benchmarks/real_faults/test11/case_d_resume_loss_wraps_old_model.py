"""Resuming from a checkpoint while the loss module still wraps the original model instance. As in
sentence-transformers' fit loop, the contrastive loss is an nn.Module built around the model (`ClipLossModule(model)`)
and the training step calls the loss module. On `--resume` the script builds a fresh model, loads the checkpoint
into it and builds the optimizer over this new instance, but the loss module was created before and still holds
the first instance. Every forward/backward goes through the old instance: its parameters receive the gradients
but are in no optimizer param group, while the optimizer's parameters (the loaded model) never get a gradient.
Nothing fails; the loss just never moves from where the checkpoint started. huggingface/sentence-transformers#2648:
"Previously, `resume_from_checkpoint` would not work because the loss model was still the original, untrained
model" (the PR shows the loss curve after resuming before and after the fix).
Thread: huggingface/sentence-transformers#2648 ("the loss model was still the original, untrained model").
Fix: point the loss module at the resumed model (`loss_module.model = model`) after loading the checkpoint.
Validated without the tool (seeds 0,1,2; 80 steps; batch 128; final = mean of the last 5 steps): fault final loss
6.672/6.250/6.194 (= 1.38/1.29/1.28 ln(128)); fixed 0.309/0.302/0.273 (= 0.06/0.06/0.06 ln(128)).
Ground truth: param_not_in_optimizer.
"""
import io
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/sentence-transformers#2648",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 128
RESUME = True


class ClipLossModule(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, texts):
        img, txt = self.model(tokens, texts)
        logits = self.model.logit_scale.exp() * img @ txt.t()
        return clip_loss(logits), img, txt, logits


def _checkpoint(seed: int) -> bytes:
    """What the interrupted job left on disk: its model's state dict at an early save."""
    torch.manual_seed(1000 + seed)
    buf = io.BytesIO()
    torch.save({"model": ResamplerAligner().state_dict(), "step": 0}, buf)
    return buf.getvalue()


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    ckpt_bytes = _checkpoint(seed)
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    loss_module = ClipLossModule(model)
    if RESUME:
        state = torch.load(io.BytesIO(ckpt_bytes))
        model = ResamplerAligner()
        model.load_state_dict(state["model"])
        if fixed:
            loss_module.model = model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            loss, img, txt, logits = loss_module(tokens[idx], texts[idx])
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
