"""A user fine-tunes an image->text aligner kept in half precision, as openai's `clip.load` hands CLIP out on a
GPU (fp16 weights), and steps it with a stock `torch.optim.Adam` (eps=1e-8). Adam's state is created in the
parameters' dtype: in fp16 the squared gradients of small entries underflow to 0 and eps=1e-8 rounds to 0,
so the update divides by zero. After a single optimizer step the weights hold inf/NaN and every loss after
it is NaN. The thread's practice (also the widely copied training code of openai/CLIP#83, which cites #57):
convert the model to fp32 for the optimizer step and back to fp16 afterwards, so Adam runs in fp32.
Thread: openai/CLIP#40 ("I get NaN values after a single parameter update"); openai/CLIP#57 ("Using Adam,
I got errors either nan or inf since attribute eps is hard to specify for Half and float32").
Fix: `convert_models_to_fp32(model)` before `optimizer.step()`, the weights back to fp16 after it.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final
loss NaN from step 1 on every seed (step 0: 3.9258/3.6387/5.1172); fixed 0.0858/0.0925/0.0806
(= 0.025/0.027/0.023 ln(B), ln(32) = 3.4657).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import token_pairs, ResamplerAligner

THREADS = ("openai/CLIP#40", "openai/CLIP#57")
CAUSE = "nonfinite_divergence"
FAMILY = "mixed_precision"
BATCH = 32
LR = 1e-3


def convert_models_to_fp32(model):  # openai/CLIP#83, after #57
    for p in model.parameters():
        p.data = p.data.float()
        if p.grad is not None:
            p.grad.data = p.grad.data.float()


def convert_weights_to_fp16(model):
    for p in model.parameters():
        p.data = p.data.half()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner().half()  # the checkpoint comes in fp16, as clip.load gives it on a GPU
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            x, t = tokens[idx].half(), texts[idx].half()
            img, txt = model(x, t)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=x, extras={"logit_scale": scale})
            if fixed:
                convert_models_to_fp32(model)
                opt.step()
                convert_weights_to_fp16(model)
            else:
                opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
