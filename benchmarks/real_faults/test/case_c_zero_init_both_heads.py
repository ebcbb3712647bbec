"""I zero-initialise the freshly added projection heads of my dual encoder (flamingo-pytorch
PerceiverResampler image tower, linear text head), as BiT does with `zero_head=True` and as adapters
do with "zero modules". In a classifier that is harmless, but here both heads start at zero, so every
image and every caption embeds to the same (zero) vector: all logits are equal, the gradient of the
symmetric InfoNCE with respect to each embedding is exactly zero, and nothing ever moves; the loss
sits at exactly ln(B). Thread(s): google-research/big_transfer#10 ("the weights of the head are
initialized to zero, which causes the network to always output zeros for whatever input, and renders
any further fine tuning of the model useless"); smallflyingpig/universal_adversarial_perturbation_generative_network_for_speaker_recognition#4
("If you initialize the last layer as zeros, the gradients will also be zeros for all layers");
yz93/LAVT-RIS#25 (two zero-initialised layers in series: the first gets an all-zero gradient).
Fix: keep the default (random) init of the heads.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean of the last 5 losses): fault 4.159,
4.159, 4.159 = ln(B) = 4.159 at every step (fails outright, all gradients exactly 0); fixed 0.191,
0.171, 0.192.
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # so `python case.py` finds common
import torch
from torch import nn

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("google-research/big_transfer#10",
           "smallflyingpig/universal_adversarial_perturbation_generative_network_for_speaker_recognition#4",
           "yz93/LAVT-RIS#25")
CAUSE = "embedding_collapse"
FAMILY = "initialisation"
BATCH = 64


def build(seed: int, zero_head: bool) -> ResamplerAligner:
    torch.manual_seed(seed)
    model = ResamplerAligner(latents=8, depth=2)
    if zero_head:  # BiT-style: start the new heads at zero
        for head in (model.proj, model.text):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
    return model


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(2048, seed=seed)
    model = build(seed, zero_head=not fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
