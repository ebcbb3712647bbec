"""A warm-up/linear-decay schedule whose total step count is computed from the number of images, while the loader
iterates over the (five per image) image-caption pairs.

What the user did: trained a flamingo-pytorch PerceiverResampler aligner on a COCO-style set where every image has
five captions. The loader yields image-caption pairs; the optimisation schedule is the BERT-era `warmup_linear`
(linear warm-up over the first 10 % of t_total, then `1 - progress`), with
`t_total = len(images) // batch_size * num_epochs`, i.e. the step count of an epoch over *images*.

What went wrong and why: an epoch over pairs has five times as many batches as t_total assumes, so after the
first fifth of training `progress = step / t_total` passes 1.0. `warmup_linear` returns `1 - progress`, which
reaches 0 at t_total and then goes negative: for the remaining 80 % of the run the learning rate is negative (down
to -4x the base lr), AdamW climbs the loss instead of descending it and undoes the little the model learned in
the first 20 steps. The loss ends far above ln(B) (~34 against ln(32) = 3.47).

Thread: huggingface/transformers#132 ("Learning rate of BertAdam may become negative"): "When using
'warmup_linear', step could be larger than t_total, then lr becomes negative. I found this bug in run_squad.py,
which using number of training examples as total step, but number of training features is reasonable." (the
total must count the items the loader actually iterates over; later versions also clamp the factor at 0).

Fix (fixed=True): t_total counts the batches the loader really yields (`len(batches) * num_epochs`), so the
schedule reaches 0 exactly at the end of training.

Validation (benchmarks/real_faults/validate.py, stand-in watch, 100 steps, B=32, ln(B)=3.4657), final loss / ln(B):
    seed 0: fault 9.9293, fixed 0.0844
    seed 1: fault 9.9687, fixed 0.0478
    seed 2: fault 9.8760, fixed 0.0575

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#132",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

CAPTIONS_PER_IMAGE = 5


def warmup_linear(x: float, warmup: float = 0.1) -> float:
    """The BertAdam-era schedule: linear warm-up, then 1 - progress (no clamp)."""
    if x < warmup:
        return x / warmup
    return 1.0 - x


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    n_images = 320
    tokens, texts = token_pairs(n_images, seed=seed)
    g = torch.Generator().manual_seed(seed)
    # five captions per image: paraphrases of the same caption features
    image_of_pair = torch.arange(n_images).repeat_interleave(CAPTIONS_PER_IMAGE)
    captions = texts[image_of_pair] + 0.1 * torch.randn(len(image_of_pair), texts.shape[1], generator=g)

    batches_per_epoch = len(image_of_pair) // B          # 50 batches of pairs per epoch
    num_epochs = max(1, steps // batches_per_epoch)
    if fixed:
        t_total = batches_per_epoch * num_epochs           # what the loader really yields
    else:
        t_total = n_images // B * num_epochs               # counted over images: 5x too small

    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_linear(s / t_total, 0.1))

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(len(image_of_pair), generator=g)
        for b in range(batches_per_epoch):
            if step >= steps:
                break
            pair_idx = order[b * B:(b + 1) * B]
            x = tokens[image_of_pair[pair_idx]]
            img, txt = model(x, captions[pair_idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=x)
            optimizer.step()
            scheduler.step()
            step += 1
    session.close()
