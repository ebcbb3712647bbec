"""Unfreezing a layer after the optimizer was built from the trainable parameters. The user's setup freezes the
whole vision side (a "pretrained" resampler and its output projection) with a helper, builds
AdamW(filter(lambda p: p.requires_grad, model.parameters())), the usual recipe for frozen layers,
and only then re-enables the projection (`model.proj.requires_grad_(True)`) because it is meant to be trained.
The projection now gets gradients every step but sits in no param group, so it never changes; only the text
layer and the logit scale train against a fixed random image embedding. Threads: bubbliiiing/yolov4-tiny-pytorch#26
("请问在冻结参数进行训练的时候不需要过滤optimizer的参数嘛？比如 optimizer = optim.Adam(filter(lambda p: p.requires_grad,
model.parameters()), lr=0.001)" - when training with frozen parameters, shouldn't the optimizer's parameters be
filtered?); SegmentationBLWX/sssegmentation#54 ("Why passing the frozen parameters which require_grad = False to
optimizers? ... Can't the optimizer only accept parameters that require gradients?"): with the filter, whatever
is unfrozen later is silently left out.
Fix: unfreeze the projection before building the optimizer (or add it with opt.add_param_group).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
1.555/1.901/1.446 (= 0.37/0.46/0.35 ln(B), ln(64) = 4.1589); fixed 0.288/0.270/0.315 (= 0.069/0.065/0.076 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("bubbliiiing/yolov4-tiny-pytorch#26", "SegmentationBLWX/sssegmentation#54")
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen_parts"
BATCH = 64


def freeze_vision(model):
    for p in list(model.resampler.parameters()) + list(model.proj.parameters()):
        p.requires_grad = False


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    freeze_vision(model)
    if fixed:
        model.proj.requires_grad_(True)
    opt = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3)
    model.proj.requires_grad_(True)  # BUG when not fixed: the projector is unfrozen after the optimizer was built
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
