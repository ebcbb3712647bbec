"""A user logs the training loss the way many person re-id / segmentation baselines do: the mean-reduced batch loss
is multiplied by the batch size "to accumulate the loss items for print", and that per-batch sum is what goes to the
logger and the dashboard every step. The objective that is optimised is the ordinary mean InfoNCE and the model
learns, but the logged curve is B times too large and never comes near ln(B): the run looks stuck far above chance.
The re-id thread: "It seems that the loss is multiplied with batch size?" -- "The loss is averaged when we backward
the loss. To accumulate the loss items for print, we need the sum result. So I times the batchsize to get the loss
sum."; the deeplab thread: "high loss value exists all the time (even after 300 epochs)" -- "Printed loss is the
sum of loss of each trained image ... so I think that's why printed loss is very high."
Thread: layumi/Person_reID_baseline_pytorch#116 ("So I times the batchsize to get the loss sum");
jfzhang95/pytorch-deeplab-xception#2 ("Printed loss is the sum of loss of each trained image").
Fix: log the mean loss (`losses={"clip": loss}`) instead of `loss * batch_size`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault logged loss
12.233/12.955/12.590 (= 2.94/3.12/3.03 ln(B), ln(64) = 4.159); fixed 0.191/0.202/0.197 (= 0.05/0.05/0.05 ln(B), ln(64) = 4.159).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("layumi/Person_reID_baseline_pytorch#116", "jfzhang95/pytorch-deeplab-xception#2")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            logged = loss.detach() if fixed else loss.detach() * len(img)   # per-batch sum "for print"
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
