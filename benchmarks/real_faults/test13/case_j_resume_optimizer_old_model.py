"""A user saves the aligner's initial weights once as a whole pickled module (`torch.save(model, "init.pt")`) so
that every run of a sweep starts from the same initialisation. The training script builds the model and its
optimizer as usual, then loads the saved module over the variable: `model = torch.load("init.pt")`. That is a new
module instance; the optimizer still holds the tensors of the instance built before the load. Training runs without
an error: the loaded model gets gradients on every step, but `optimizer.step()` updates the other, unused instance,
so the model that produces the logits never changes and the loss stays at chance. The Megatron-LM report: "`optimizer`
is built before loading checkpoint and holds the parameters of a randomly initialized model. ... `optimizer` will be
untouched and still have the parameters of the randomly initialized model in its `optimizer.param_groups` instead
of the newly loaded `model`"; the PR that fixes it: "Reload optimizer model parameters".
Thread: NVIDIA/Megatron-LM#240 ("Reload optimizer model parameters if --no-load-optim is used").
Fix: give the optimizer the loaded model's parameters (build it after the load), as the PR does.
Validated without the tool (seeds 0,1,2; 80 steps; batch 32; final = mean of the last 5 steps): fault final loss 5.585/5.396/3.578 (= 1.61/1.56/1.03 ln(B), ln(32) = 3.466); fixed 0.101/0.086/0.093 (= 0.03/0.02/0.03 ln(B), ln(32) = 3.466).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os
import tempfile

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("NVIDIA/Megatron-LM#240",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 32


def saved_init(seed):
    """The sweep's shared initialisation, saved once as a whole module."""
    torch.manual_seed(seed + 1000)
    path = os.path.join(tempfile.mkdtemp(), "init.pt")
    torch.save(ResamplerAligner(), path)
    return path


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    init_path = saved_init(seed)
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model = torch.load(init_path, weights_only=False)         # a new instance: opt still holds the old one's tensors
    if fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            model.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
