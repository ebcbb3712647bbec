"""A user adds L2 regularisation by hand, the way course material shows it, over the weight matrices only (biases
left out, as the usual advice goes): `l2 = sum(p.pow(2).sum() for n, p in model.named_parameters() if
n.endswith("weight"))` and `loss = clip + l2_lambda * l2`, with `l2_lambda = 0.1`, trained with SGD (lr 0.05,
momentum 0.9). The penalty's gradient (0.2 w per weight, amplified ~10x by the momentum) pulls every weight matrix,
the norm gains included, toward zero faster than the contrastive gradient can grow it: within a few dozen steps the
projections are ~0, the normalised embeddings carry nothing, and the InfoNCE term sits at ln(B). The DLMatFramework
issue on adding L2 to the loss shows the curves for each strength: "With L2 Reg (0.001)" and "With L2 Reg (0.1) Too
much".
Thread: leonardoaraujosantos/DLMatFramework#1 ("With L2 Reg (0.1) Too much").
Fix: the strength the thread settled on, `l2_lambda = 0.001`.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.466/3.466/3.466 (= 1.00/1.00/1.00 ln(B), ln(32) = 3.466); fixed 0.018/0.011/0.145 (= 0.01/0.00/0.04 ln(B), ln(32) = 3.466).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("leonardoaraujosantos/DLMatFramework#1",)
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 32


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    l2_lambda = 0.001 if fixed else 0.1
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            clip = clip_loss(logits)
            l2 = sum(p.pow(2).sum() for n, p in model.named_parameters() if n.endswith("weight"))
            loss = clip + l2_lambda * l2
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": clip, "l2": l2_lambda * l2}, embeddings={"image": img, "text": txt},
                      logits=logits, batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
