"""Backbone features cached once with a shuffling loader. To save the frozen backbone's forward pass every
epoch, the user runs it once over the image set and concatenates the outputs, but reuses the training loader
(shuffle=True) for that pass. The cached features come out in the loader's random order while the captions stay
in dataset order, and the training set is then `TensorDataset(cached_feats, captions)`: every image is paired
with some other image's caption for the whole run. Nothing errors; the contrastive loss stays near ln(B)
because there is no pairing left to learn.
Threads: binli123/dsmil-wsi#19 ("in the function 'bag_dataset', you set the dataloader's shuffle params as
True. I think it will lead to the order of elements in Var feats_list is different ... it will mismatch";
maintainer: "Good catch. I think you are right, I have fixed that"); facebookresearch/deepcluster#6 ("simply
adding shuffle=True to DataLoader will not suffice as ... the order of the computed features don't correspond
to the actual index in the dataset").
Fix: `shuffle=False` in the caching pass (features stay in dataset order, aligned with their captions).
Validated without the tool (seeds 0,1,2; 90 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1186/4.1465/4.1437 (= 0.990/0.997/0.996 x ln(B)); fixed 0.3584/0.3712/0.3477 (= 0.086/0.089/0.084 x ln(B));
ln(B) = 4.1589.
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from common import D, ResamplerAligner, clip_loss, token_pairs

THREADS = ("binli123/dsmil-wsi#19", "facebookresearch/deepcluster#6")
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 64


def train(watch, steps: int = 90, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    patches, captions = token_pairs(1024, seed=seed)
    backbone = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D)).eval()  # frozen "pretrained" encoder
    backbone.requires_grad_(False)

    # one pass of the frozen backbone, cached
    cache_loader = torch.utils.data.DataLoader(patches, batch_size=256, shuffle=not fixed)
    with torch.no_grad():
        feats = torch.cat([backbone(x) for x in cache_loader])
    train_set = torch.utils.data.TensorDataset(feats, captions)
    loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True, drop_last=True)

    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for feat, cap in loader:
                if step >= steps:
                    break
                img, txt = model(feat, cap)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=feat)
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
