"""A user trains a Perceiver resampler on frozen patch tokens against a small bag-of-words caption encoder
(embedding + masked mean over the caption's tokens). The captions come from scraped alt-text; 3 of the 1024
rows have an empty caption and tokenize to padding only. Their attention mask sums to 0, the masked mean is
0/0 = NaN, the NaN text embedding turns its logits row and column into NaN, the loss is NaN, and the first
optimizer step that sees one writes NaN into every weight: within a few steps the loss is NaN for good.
Thread: Deci-AI/super-gradients#912 ("results in NaN loss on images that only contain one semantic class
... computing the mean of an empty tensor results in NaN"); facebookresearch/Mask2Former#243 ("Division by
zero caused by mask operation ... the NaN caused by the divide by 0 error will appear").
Fix: `mask.sum(1, keepdim=True).clamp(min=1)` as the mean's denominator.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final
loss NaN/NaN/NaN (first non-finite loss at step 10/3/27); fixed 1.5975/1.7192/1.5373 (= 0.384/0.413/0.370 x ln(64) = 4.1589).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, E, ResamplerAligner, clip_loss, token_pairs

THREADS = ("Deci-AI/super-gradients#912", "facebookresearch/Mask2Former#243")
CAUSE = "nonfinite_divergence"
FAMILY = "data_pipeline"
BATCH = 64
VOCAB, SEQ, PAD = 256, 12, 0


def tokenize(texts, g):
    """Caption token ids (n, SEQ), 0 = padding: word j is the argmax of a projection of the caption's
    content; lengths vary; a few scraped rows have no caption at all."""
    proj = torch.randn(SEQ, texts.shape[1], VOCAB - 1, generator=g)
    ids = torch.einsum("nd,sdv->nsv", texts, proj).argmax(-1) + 1
    lengths = torch.randint(6, SEQ + 1, (len(texts),), generator=g)
    lengths[torch.randperm(len(texts), generator=g)[:3]] = 0  # empty alt-text
    return ids.masked_fill(torch.arange(SEQ) >= lengths[:, None], PAD)


class Aligner(nn.Module):
    def __init__(self, fixed):
        super().__init__()
        self.vision = ResamplerAligner()  # its resampler + projection encode the image
        self.embed = nn.Embedding(VOCAB, 64, padding_idx=PAD)
        self.text_proj = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fixed = fixed

    def encode_text(self, ids):
        mask = (ids != PAD).float().unsqueeze(-1)
        count = mask.sum(1)
        if self.fixed:
            count = count.clamp(min=1)
        return self.text_proj((self.embed(ids) * mask).sum(1) / count)  # masked mean pooling

    def forward(self, tokens, ids):
        return F.normalize(self.vision.encode_image(tokens), dim=-1), F.normalize(self.encode_text(ids), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    g = torch.Generator().manual_seed(seed)
    ids = tokenize(texts, g)
    model = Aligner(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,), generator=g)
            img, txt = model(tokens[idx], ids[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
