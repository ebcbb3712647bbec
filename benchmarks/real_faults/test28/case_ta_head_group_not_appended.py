"""Per-module lr groups built by hand: the heads' group is filled but never appended to the optimizer's list.

What the user did: a flamingo-pytorch PerceiverResampler over frozen-backbone patch tokens, mean over latents, an
image projection head `proj`, a text projection head `text` and a learnable logit scale (`common.ResamplerAligner`),
batch 32. Following the usual recipe "small lr for the backbone, larger lr for the new heads" they built the
AdamW param groups by name, one dict per group, the way the HVPNeT training script does:
    parameters = []
    params = {"lr": 1e-5, "params": [...resampler...]};            parameters.append(params)
    params = {"lr": 1e-3, "params": [...proj, text, logit_scale...]}   # <- no parameters.append(params)
    optimizer = AdamW(parameters)
The heads' dict is filled and then dropped, so the optimizer only holds the resampler.

What went wrong and why: the projection heads and the logit scale get gradients on every step but are in no param
group, so `optimizer.step()` never changes them: both towers end in a frozen random linear map, and the only thing
that moves is the resampler at its cautious 1e-5. The random heads with the initial scale 1/0.07 score the pairs
confidently and wrongly: after step 10 the loss moves between 3.9 and 5.8 (ln(B) = 3.47) and ends at 4.3-4.8,
while the same script with the heads' group appended is at ~0.2 by step 100.

Threads: zjunlp/HVPNeT#5 ("the parameters for crf and fc are not added to the optimizer ... `parameters.append
(params)` should be added after line 499, otherwise crf and fc will not be trained" - maintainers: "You're
right!"), ohhhyeahhh/SiamCAR#18 (a layer of the model, `self.down`, never put into the optimizer's param groups;
acknowledged by the authors).

Fix (the thread's): append the heads' group, `parameters.append(params)`, before building the optimizer.

Validation (validate.py, 100 steps, B = 32, ln(B) = 3.4657; final = mean of the last 5 steps):
    seed 0: fault 4.8159 (1.390 ln B), fixed 0.2329 (0.067 ln B)
    seed 1: fault 4.5735 (1.320 ln B), fixed 0.1631 (0.047 ln B)
    seed 2: fault 4.2636 (1.230 ln B), fixed 0.1935 (0.056 ln B)

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("zjunlp/HVPNeT#5", "ohhhyeahhh/SiamCAR#18")
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()

    parameters = []
    params = {"lr": 1e-5, "params": []}  # the resampler: small lr
    for name, param in model.named_parameters():
        if name.startswith("resampler"):
            params["params"].append(param)
    parameters.append(params)
    params = {"lr": 1e-3, "params": []}  # the new heads and the temperature: larger lr
    for name, param in model.named_parameters():
        if name.startswith(("proj", "text", "logit_scale")):
            params["params"].append(param)
    if fixed:
        parameters.append(params)  # the line the user's script is missing
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(len(tokens), generator=gen)
        for start in range(0, len(order) - B + 1, B):
            idx = order[start:start + B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
            optimizer.step()
            step += 1
            if step >= steps:
                break
    session.close()
