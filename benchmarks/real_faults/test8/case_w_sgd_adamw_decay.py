"""A CLIP recipe's AdamW weight decay carried over to SGD. The user trains a perceiver-pytorch aligner with the
CLIP/open_clip recipe (weight decay 0.2, meant for AdamW's decoupled decay), then switches to SGD with momentum
(lr 0.05, momentum 0.9) to save optimizer memory and keeps `weight_decay=0.2`. In SGD the decay is coupled and
amplified by the momentum: every step takes ~10 x 0.05 x 0.2 = 10% of each weight away, far more than the
contrastive gradient puts back, so all weights (the projections, the latents and the learnable logit scale) are
driven towards zero, the embeddings lose their structure and the loss sits at ln(B). The DeiT thread states the
trap: "weight decay is set to 0.05 ... much larger than common value in ConvNets (like 1e-4)" - "The difference
with CNN for the learning rate and weigth decay is due to the fact that we use AdamW not SGD"; DALLE-pytorch:
"'adamw' optimizer + weight decay = poor generations" with the paper's 4.5e-2, solved by setting the decay to 0.
Thread: facebookresearch/deit#68 ("The difference with CNN for the learning rate and weigth decay is due to the
fact that we use AdamW not SGD"); lucidrains/DALLE-pytorch#170 ("the weight decay is creating strange
generations"); pytorch/pytorch#22163 ("Adam with weight decay decoupled from gradients").
Fix: `weight_decay=1e-4` (the usual SGD value) instead of the AdamW recipe's 0.2.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1592/4.1589/4.1590 (= 1.000/1.000/1.000 ln(64)); fixed 0.0317/0.0385/0.0390 (= 0.008/0.009/0.009 ln(64)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, token_pairs, clip_loss

THREADS = ("facebookresearch/deit#68", "lucidrains/DALLE-pytorch#170", "pytorch/pytorch#22163")
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = PerceiverAligner(latents=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4 if fixed else 0.2)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
