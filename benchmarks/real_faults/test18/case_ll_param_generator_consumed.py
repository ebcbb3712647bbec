"""A user trains a small CLIP (transformers CLIPModel) with open_clip-style parameter groups: weight decay on
the weight matrices, none on gains, biases and embeddings, and the temperature in a group of its own.
`named = model.named_parameters()` is a generator; the script first logs the trainable parameter count
from it, which exhausts it, so the loop that sorts parameters into the decay / no-decay groups never runs.
Both groups are empty lists (torch accepts empty groups inside a list, so nothing raises) and the optimizer
holds the logit scale alone: the towers and projections get their gradients every step and are never
updated, and the contrastive loss stays at its start, above ln(B).
Thread: deepchem/deepchem#3746 ("model.parameters() returns a generator object that's consumed and stored
in a variable and the empty generator object later is passed to the optimizer"); the multimodal framework's
guard for the same outcome: facebookresearch/mmf#580 ("guard against missing parameters ... the error is
hard to spot").
Fix: take the parameters again for the grouping loop (`named = model.named_parameters()` after the count).
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final
loss 4.3178/3.9935/3.7633 (= 1.246/1.152/1.086 ln(B), ln(32) = 3.4657); fixed 1.0692/1.0244/0.6691
(= 0.309/0.296/0.193 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import logging
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip

THREADS = ("deepchem/deepchem#3746", "facebookresearch/mmf#580")
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer"
BATCH = 32
LR = 1e-3
WD = 0.1


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or "norm" in name or "bias" in name or "embedding" in name


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed=seed)

    named = model.named_parameters()
    n_trainable = sum(p.numel() for _, p in named if p.requires_grad)
    logging.getLogger(__name__).info("trainable parameters: %.1fk", n_trainable / 1e3)
    if fixed:
        named = model.named_parameters()
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad or name == "logit_scale":
            continue
        (no_decay if _no_decay(name, p) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0},
                             {"params": [model.logit_scale], "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.98), eps=1e-6)

    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=g)
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, inputs=pixels[idx].flatten(1),
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
