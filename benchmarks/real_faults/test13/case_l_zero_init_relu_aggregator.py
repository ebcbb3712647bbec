"""A user replaces the mean over the PerceiverResampler's latents with a learned aggregation, copied from a
"deep cross attention" GRN block: per latent an aggregation weight from `RMSNorm -> Linear(dim, 1, bias=False) -> ReLU`,
the linear zero-initialised so that the block starts as a no-op, and the pooled vector is the weighted sum of the
latents. With a zero weight, no bias and a ReLU, every aggregation weight is exactly 0, the ReLU's gradient at 0 is 0,
so the linear never receives a gradient and never leaves zero: every image pools to the zero vector, the image
embedding is the projection's bias for all images, nothing upstream (resampler, latents) gets a gradient, and the loss
sits at ln(B). The issue: "the zero initialization and lack of bias in the GRN implementation means that there is
both no symmetry-breaking and no gradient with which to move the optimizer off of zero (ever)"; the author: "i
changed it to small init instead".
Thread: lucidrains/deep-cross-attention#2 ("Zero initialization with ReLU - no gradient").
Fix: a small random init of the aggregation linear (`nn.init.normal_(w, std=0.02)`), as the maintainer did.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.469/3.467/3.468 (= 1.00/1.00/1.00 ln(B), ln(32) = 3.466); fixed 0.087/0.090/0.082 (= 0.03/0.03/0.02 ln(B), ln(32) = 3.466).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, ResamplerAligner, clip_loss, token_pairs

THREADS = ("lucidrains/deep-cross-attention#2",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"
BATCH = 32


class GRNPoolAligner(ResamplerAligner):
    def __init__(self, small_init: bool = False):
        super().__init__()
        linear = nn.Linear(D, 1, bias=False)
        if small_init:
            nn.init.normal_(linear.weight, std=0.02)
        else:
            nn.init.zeros_(linear.weight)
        self.to_aggregate = nn.Sequential(nn.RMSNorm(D), linear, nn.ReLU())

    def encode_image(self, tokens):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]      # (B, latents, D)
        weights = self.to_aggregate(lat)                      # (B, latents, 1)
        return self.proj((weights * lat).sum(1))


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = GRNPoolAligner(small_init=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
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
