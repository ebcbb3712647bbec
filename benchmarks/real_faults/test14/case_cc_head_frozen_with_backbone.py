"""A user fine-tunes an aligner whose vision side is a pretrained Perceiver resampler they want frozen, and writes
the freezing the way the mmdetection user did, one loop per module: `for v in model.resampler.parameters():
v.requires_grad = False` and then the same loop over the heads (`model.proj`, `model.text`), which were meant to be
the trainable part. The optimizer is built from `filter(lambda p: p.requires_grad, model.parameters())`, which now
holds only the logit scale. Because the loss still depends on that scale, backward raises no error (in the thread,
with nothing left to train, it did): training runs, the scale moves, neither projection ever gets a gradient and the
loss stays at ln(B). The mmdetection thread: "I made the following changes ... `for v in self.backbone.parameters():
v.requires_grad = False` / `for v in self.bbox_head.parameters(): v.requires_grad = False`"; the detectron2 question
on training one head with the rest frozen: "I want to train only my classification head ... keeping all heads
freezed".
Thread: open-mmlab/mmdetection#3667 ("Freezing the backbone network will report an error"); facebookresearch/detectron2#635
("How to train only a particular head?").
Fix: freeze the backbone only (drop the loop over the heads).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
4.970/4.715/4.849 (= 1.43/1.36/1.40 ln(B), ln(32) = 3.466); fixed 0.218/0.201/0.238 (= 0.06/0.06/0.07 ln(B), ln(32) = 3.466).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("open-mmlab/mmdetection#3667", "facebookresearch/detectron2#635")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    for v in model.resampler.parameters():       # the pretrained backbone: frozen on purpose
        v.requires_grad = False
    if not fixed:
        for head in (model.proj, model.text):      # the heads: frozen by mistake
            for v in head.parameters():
                v.requires_grad = False
    opt = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
