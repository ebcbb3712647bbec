"""To save time, a user runs the frozen vision backbone once over the training images and caches the patch
tokens, then trains a Perceiver resampler on (cached tokens, caption features). The caching loop reuses the
training DataLoader settings, `shuffle=True`, and appends batch after batch to a list; the captions are
then read in dataset order. Every cached image is paired with some other image's caption, the loss never
leaves ln(B), and since the model and the loss are untouched the user hunts in the wrong places.
Thread: walnut-REE/sof#8 ("the 'shuffle' should be set to 'False', it leads to the mismatch between image
and the extrinsic parameter"); ultralytics/ultralytics#442 ("when shuffle is true ... the shuffling of the
images do not match the bounding boxes").
Fix: `shuffle=False` in the feature-caching DataLoader.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final
loss 4.1357/4.1433/4.1485 (= 0.994/0.996/0.998 x ln(64) = 4.1589); fixed 0.4328/0.4297/0.5304 (= 0.104/0.103/0.128 x ln(64) = 4.1589).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from common import D, ResamplerAligner, clip_loss, token_pairs

THREADS = ("walnut-REE/sof#8", "ultralytics/ultralytics#442")
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 64


@torch.no_grad()
def cache_features(backbone, images, shuffle, seed):
    loader = DataLoader(TensorDataset(images), batch_size=128, shuffle=shuffle,
                        generator=torch.Generator().manual_seed(seed))
    return torch.cat([backbone(x) for (x,) in loader])


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    images, captions = token_pairs(1024, seed)
    backbone = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D)).requires_grad_(False)  # frozen
    feats = cache_features(backbone, images, shuffle=not fixed, seed=seed)  # fault: shuffle=True
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed + 1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(feats), generator=g)[:BATCH]
            img, txt = model(feats[idx], captions[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img), inputs=feats[idx])
            opt.step()
            opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
