"""perceiver-pytorch Perceiver image tower + MLP text tower, trained with my own InfoNCE written as
-log(exp(pos) / sum exp(sim)). To save memory the similarity matrix is computed in float16. The loss goes
down for a while and then turns into NaN, and every weight is NaN after the next step. exp() of a float16
logit overflows to inf above ~11.1, and with the CLIP scale 1/0.07 = 14.3 that is reached as soon as a
positive pair's cosine passes ~0.78, i.e. exactly when the model starts to learn.
Thread(s): Lightning-Universe/lightning-bolts#320 ("exponential operation on the negative and positive
samples may induce numerical instability i.e. loss becomes nan ... Temporary solution: Uses
torch.nn.CrossEntropyLoss"); Lightning-Universe/lightning-bolts#811 (float overflow of e ** (1 /
temperature) in nt_xent_loss). Fix: upcast the logits to float32 before the exp (or use F.cross_entropy
on float32 logits).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss of the last 12 steps): fault NaN
from step 26 / 27 / 31 (loss before the overflow below ln B, every weight NaN after it) vs ln(64) =
4.159; fixed 0.331 / 0.376 / 0.319, finite throughout.
Ground truth: nonfinite_divergence.
"""
import torch
from common import PerceiverAligner, token_pairs

THREADS = ("Lightning-Universe/lightning-bolts#320", "Lightning-Universe/lightning-bolts#811")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


def info_nce(sim: torch.Tensor) -> torch.Tensor:
    e = torch.exp(sim)
    pos = torch.diagonal(e)
    loss_i2t = -torch.log(pos / e.sum(dim=1)).mean()
    loss_t2i = -torch.log(pos / e.sum(dim=0)).mean()
    return (loss_i2t + loss_t2i) / 2


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    gen = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=gen)
            img, txt = model(tokens[idx], texts[idx])
            sim = model.logit_scale.exp().half() * (img.half() @ txt.half().t())
            if fixed:
                sim = sim.float()
            loss = info_nce(sim)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"infonce": loss}, embeddings={"image": img, "text": txt}, logits=sim,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
