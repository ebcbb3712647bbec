"""A multimodal table (one image column, one text column) has rows whose image is missing. The data pipeline fills
a zero image for them and passes the number of valid images per row; the model zeroes the projected features of
the missing images with that mask and then L2-normalises them as `x / x.norm(dim=-1, keepdim=True)`. A missing
image's row is exactly zero, so it becomes 0/0 = NaN: the first batch holding such a row gives a NaN loss and NaN
gradients, the optimizer writes NaN into every weight, and the run is NaN from then on.
Thread: autogluon/autogluon#4114 ("Fix the bug which results in returning a tensor with NaN values when image data
is absent"); the zero image for a missing one comes from autogluon/autogluon#1606 ("Added the choice of using a
zero image if an image is missing").
Fix: clamp the norm before dividing (`x / torch.clamp(x.norm(dim=-1, keepdim=True), min=1e-6)`, the PR's one line).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final
loss NaN/NaN/NaN (non-finite from step 0/2/7); fixed 0.117/0.219/0.107 (= 0.03/0.06/0.03 ln(B), ln 32 = 3.466).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("autogluon/autogluon#4114", "autogluon/autogluon#1606")
CAUSE = "nonfinite_divergence"
FAMILY = "data_pipeline"
BATCH = 32
MISSING = 0.01  # share of rows whose image file is absent


class ImageTextAligner(ResamplerAligner):
    """ResamplerAligner whose image features are masked by the number of valid images of each row (AutoMM's CLIP)."""

    def __init__(self, clamp_norm: bool = False):
        super().__init__()
        self.clamp_norm = clamp_norm

    def forward(self, tokens, image_valid_num, texts):
        image_masks = (image_valid_num > 0).to(tokens.dtype)
        image_features = self.encode_image(tokens) * image_masks[:, None]
        norm = image_features.norm(dim=-1, keepdim=True)
        if self.clamp_norm:
            norm = torch.clamp(norm, min=1e-6)
        image_features = image_features / norm
        text_features = self.text(texts)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return image_features, text_features


def load_rows(n: int = 1024, seed: int = 0):
    """Patch tokens, valid-image counts and text features; a missing image is read as a zero image."""
    tokens, texts = token_pairs(n, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    missing = torch.rand(n, generator=g) < MISSING
    tokens = torch.where(missing[:, None, None], torch.zeros_like(tokens), tokens)
    return tokens, (~missing).long(), texts


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, valid, texts = load_rows(1024, seed=seed)
    model = ImageTextAligner(clamp_norm=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(tokens), generator=g)
    per_epoch = len(tokens) // BATCH
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            if step and step % per_epoch == 0:
                order = torch.randperm(len(tokens), generator=g)
            idx = order[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
            img, txt = model(tokens[idx], valid[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            target = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
