"""Resume that rebuilds the model after the optimizer was made. The training script builds the model and its
AdamW, then, because `--resume` is set, calls a `load_model(path)` helper that constructs a *new* aligner and
loads the checkpoint into it, rebinding `model`. The optimizer still holds the parameters of the first
instance, which no longer take part in the forward: the resumed model gets gradients every step but is in no
param group, `opt.step()` moves tensors nobody uses and the loss never leaves its starting level. The fix PR
describes this stale binding: "whether the *parameters* are still the ones the optimizer tracks is the check
that actually detects a stale binding"; OpenNMT hit the mirror order ("I found that the line
`optim.set_parameters(model.parameters())` wipe out states").
Thread: CodefyUI/CodefyUI#147 ("a 'resume' only ever restored weights ... that object never got trained");
OpenNMT/OpenNMT-py#38 ("optim.optimizer.state_dict.state not found when loading from checkpoint").
Fix: build the optimizer after `load_model` (on the parameters of the model that is trained).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 6.1563/5.5250/5.5252 (= 1.480/1.329/1.329 ln(B), ln(64) = 4.1589); fixed 0.1479/0.1916/0.1339 (= 0.036/0.046/0.032 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import io
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("CodefyUI/CodefyUI#147", "OpenNMT/OpenNMT-py#38")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64


def load_model(buf: io.BytesIO) -> ResamplerAligner:
    buf.seek(0)
    ckpt = torch.load(buf)
    m = ResamplerAligner(latents=8)
    m.load_state_dict(ckpt["model"])
    return m


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    # the checkpoint an earlier (interrupted) job left behind: its weights at step 0
    ckpt = io.BytesIO(); torch.save({"model": ResamplerAligner(latents=8).state_dict(), "step": 0}, ckpt)

    model = ResamplerAligner(latents=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model = load_model(ckpt)  # --resume
    if fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, targets=torch.arange(BATCH))
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
