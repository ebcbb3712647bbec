"""A model trained in half precision (`model.half()`, Adam eps already raised to 1e-4 as the fp16 threads
advise) with a hand-written InfoNCE: `exp(sim / tau)` and `log(pos / sum)`. In fp16 `exp` overflows to inf
once any cosine passes tau * ln(65504) = 0.07 * 11.09 = 0.78, which the matching pairs reach after a few
steps of learning; inf / inf is NaN, the backward fills every weight with NaN and the loss stays NaN. The
usual fixes compute the softmax in fp32 or with logsumexp.
Threads: facebookresearch/ParlAI#2378 ("Added an FP16-safe cross entropy loss, which computes the softmax in
FP32 to avoid overflow"); yichen928/ActiveFT#4 ("I encounter nan/inf values in the loss gradients which seem
to occur due to the small chosen temperature (0.07) followed by an exponential function", code
`prod_exp = torch.exp(prod)`); zju3dv/LoFTR#285 ("So I tried to train with fp16 ... But the train loss is also
NAN").
Fix: `sim = sim.float()` before the exponential (the similarities leave fp16 for the softmax).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final
loss NaN on all 3 seeds (first NaN at step 18 / 16 / 17, after the loss had fallen); fixed 0.176/0.165/0.177
(= 0.042/0.040/0.043 ln(64)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs

THREADS = ("facebookresearch/ParlAI#2378", "yichen928/ActiveFT#4", "zju3dv/LoFTR#285")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64
TAU = 0.07


def info_nce(img, txt, fixed=False):
    sim = img @ txt.t() / TAU
    if fixed:
        sim = sim.float()                      # the fix: the softmax in fp32
    e = torch.exp(sim)
    pos = e.diag()
    loss = -0.5 * (torch.log(pos / e.sum(1)).mean() + torch.log(pos / e.sum(0)).mean())
    return loss, sim


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner().half()          # "fp16 training" to halve memory
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4)   # eps raised: 1e-8 is 0 in fp16
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            loss, sim = info_nce(img, txt, fixed)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=sim,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
