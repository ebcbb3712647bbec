"""The logged total loss is summed over a dict that already holds the total: it adds itself, so the loss the
user watches is twice the objective.

What the user did: a flamingo-pytorch PerceiverResampler aligner trained with an image-text contrastive loss
(ITC, symmetric InfoNCE on the full 32-dim embedding) plus a Matryoshka term (the same loss on the 8- and
16-dim prefixes, averaged). The backward pass uses `itc + mrl`. For logging, the loop puts the detached terms
in a dict, adds a `loss` entry for the total and fills it by summing over the dict's values, the way
densecap's `forward_backward` built `losses.total_loss`; that dict is what goes to the logger (and to the
watch).

What went wrong and why: the dict is iterated after the `loss` key was inserted, so the loop also adds
`losses["loss"]` itself, which by then already holds itc + mrl: the logged total is 2 x (itc + mrl) on every
step. Training is unaffected (backward runs on the right sum), but the curve the user reads is twice the
objective and is not the loss of the logits either (at step 0 it reads 19-23 against an objective of 10-12);
in densecap the printed total_loss was "greater than the sum of the losses" for the same reason.

Threads: jcjohnson/densecap#32 (`total_loss` is larger than the sum of the losses: the total is in the table it
is summed over and gets added to itself), jcjohnson/densecap#33 (the fix: sum into a local variable, then
store it).

The fix (fixed=True): sum the components into a local variable and store it afterwards, so the logged total
is itc + mrl, the objective that is back-propagated.

Validation (validate.py --half test33, seeds 0/1/2, 100 steps, B = 32, chance ln 32 = 3.466; the validated
key is the logged `loss`): fault final 0.469 / 0.404 / 0.498 (ratio 0.135 / 0.117 / 0.144), exactly twice the
objective itc + mrl = 0.234 / 0.202 / 0.249 that the same run optimises (itc 0.098 / 0.076 / 0.106, mrl
0.136 / 0.126 / 0.143: the model learns, the logged loss misstates the objective by a factor 2 on every
step). Fixed: logged loss = itc + mrl = 0.234 / 0.202 / 0.249 (ratio 0.068 / 0.058 / 0.072).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("jcjohnson/densecap#32", "jcjohnson/densecap#33")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 32
LR = 1e-3
NESTED = (8, 16)  # Matryoshka prefixes of the 32-dim embedding


def matryoshka(img, txt, scale):
    terms = []
    for d in NESTED:
        a, b = F.normalize(img[:, :d], dim=-1), F.normalize(txt[:, :d], dim=-1)
        terms.append(clip_loss(scale * a @ b.t()))
    return torch.stack(terms).mean()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed + 1)
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img = model.proj(model.resampler(tokens[idx].unsqueeze(1))[:, 0].mean(1))
            txt = model.text(texts[idx])
            scale = model.logit_scale.exp()
            img_n, txt_n = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
            logits = scale * img_n @ txt_n.t()
            itc = clip_loss(logits)
            mrl = matryoshka(img, txt, scale)
            optimizer.zero_grad()
            (itc + mrl).backward()

            losses = {"itc": itc.detach(), "mrl": mrl.detach()}
            if fixed:
                total = torch.zeros(())
                for value in losses.values():
                    total = total + value
                losses["loss"] = total
            else:  # densecap's pattern: the total lives in the dict it is summed over
                losses["loss"] = torch.zeros(())
                for key, value in losses.items():
                    losses["loss"] = losses["loss"] + value
            session.observe(step, losses=losses, embeddings={"image": img_n, "text": txt_n}, logits=logits,
                            inputs=tokens[idx])
            optimizer.step()
