"""A hand-written latent resampler pools frozen patch tokens with `nn.MultiheadAttention` built without
`batch_first=True`, while the tokens and the expanded latents are passed as (batch, seq, dim). The module
then reads dim 0 as the sequence and dim 1 as the batch: each latent attends over the *batch* (the same
latent slot of every sample), not over its own image's tokens. Nothing errors because the resampler has as
many latents as the backbone has patch tokens (16 and 16), so the "batch" sizes of query and key agree. The
query of latent l is the same vector for every sample, so its softmax over the batch and the pooled value are
the same for every sample: every image gets the same embedding and the loss sits at ln(B). Reported the same
way in public threads: dhimasryan/MOSA-Net-Cross-Domain#10 ("you initialize your MHA blocks with
`batch_first=False` (since that is the default in torch), yet in the `forward` method of your model you seem
to presume batch-first channel order ... I could confirm that samples influence each other"); aipixel/AEMatter#3
("they are processed via `nn.MultiheadAttention` module that is always initialized in `batch_first=False` mode
so `(b h1)` ... are treated as sequence dimension" - maintainer: "there is indeed a bug"); om-ai-lab/OmDet#19
("Shouldn't this MultiHeadAttention be initialized with `batch_first=True`, as the inputs of the self_attn
layer are of the shape (batch_size, ...)?").
Thread: dhimasryan/MOSA-Net-Cross-Domain#10; aipixel/AEMatter#3; om-ai-lab/OmDet#19.
Fix: `nn.MultiheadAttention(D, heads, batch_first=True)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.172/4.172/4.167 (= 1.003/1.003/1.002 ln(64)); fixed 0.259/0.220/0.228 (= 0.062/0.053/0.055 ln(64)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, T, token_pairs, clip_loss

THREADS = ("dhimasryan/MOSA-Net-Cross-Domain#10", "aipixel/AEMatter#3", "om-ai-lab/OmDet#19")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64
LATENTS = T  # one latent per patch token


class LatentPooler(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(LATENTS, D) * 0.02)
        self.norm_q, self.norm_kv = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 4, batch_first=batch_first)   # the bug: batch_first left False
        self.ff = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, tokens):                              # tokens: (B, T, D)
        q = self.latents.unsqueeze(0).expand(len(tokens), -1, -1)
        kv = self.norm_kv(tokens)
        x = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        x = x + self.ff(x)
        return x.mean(1)                                    # (B, D)


class Aligner(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.pool = LatentPooler(batch_first)
        self.img_proj = nn.Linear(D, E)
        self.txt_proj = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.img_proj(self.pool(tokens)), dim=-1)
        txt = F.normalize(self.txt_proj(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner(batch_first=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img), inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
