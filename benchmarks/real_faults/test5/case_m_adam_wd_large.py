"""A weight decay sized for a different optimizer: the user puts `weight_decay=30` on plain `torch.optim.Adam`
(coupled L2: the decay term is added to the gradient before Adam's normalisation), following reports that
Adam "needs" a far larger weight decay than SGD. Biases, norms and the logit scale are excluded from decay as
open_clip does, so only the weight matrices are pulled to zero; with a decay term this large Adam's step is
driven by `wd * w` instead of the contrastive gradient, the weight matrices shrink, every output falls back
onto its bias and the image embeddings collapse onto one direction (mean pairwise cosine ~0.97 at the end of
seed 0 vs ~0.07 with the fix); the loss sits near ln(B). The public reports: tflearn/tflearn#772 ("with the
Momentum optimizer, a fairly typical weight decay of 0.001 works well. However, when using an Adam optimizer
with the same network, I get much better results with a wd in the 10.0 - 100.0 range"), huggingface/diffusers#1176
("as training go on, word embeddings decays to zero").
Thread: tflearn/tflearn#772 ("a wd in the 10.0 - 100.0 range"); huggingface/diffusers#1176 ("word embeddings
decays to zero").
Fix: a usual decay, `weight_decay=0.1` for the weight matrices.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.952/3.747/4.076 (= 0.950/0.901/0.980 x ln(64) = 4.159); fixed 0.143/0.165/0.152 (= 0.035/0.040/0.037 x ln(64)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("tflearn/tflearn#772", "huggingface/diffusers#1176")
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]   # biases, norms, logit_scale
    wd = 0.1 if fixed else 30.0
    opt = torch.optim.Adam([{"params": decay, "weight_decay": wd},
                            {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
