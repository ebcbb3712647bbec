"""Image features cached one file per image (`0.pt`, `1.pt`, ..., `1023.pt`) are listed with `sorted(os.listdir(...))`
while the captions come from a CSV in numeric id order: a plain string sort puts `10.pt` before `2.pt`, so after
the listing row i of the image store is no longer image i and almost every image is zipped with another item's
caption. Nothing errors, shapes match, and the contrastive loss sits near ln(B). The threads are the same pairing bug
between two independently listed folders: "the os.listdir lists the names of the images arbitrarily, which causes
the function match_features to not give accurate results as the image 000000.png ... is not being compared to
000001.png" (fixed by sorting both lists), and "glob(...) doesn't always keep order, so files1 and files2 were
ordered differently" (SinGAN's SIFID comparing different images to each other).
Thread: FoamoftheSea/KITTI_visual_odometry#3 ("os.listdir does not list the name of the images in ascending order");
tamarott/SinGAN#136 ("Fix wrong pairing between files in SIFID").
Fix: list the files in the caption order, `sorted(names, key=lambda f: int(f.split(".")[0]))`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1945/4.1615/4.1369 (= 1.009/1.001/0.995 ln(B), ln(64) = 4.1589); fixed 0.1613/0.1751/0.1449 (= 0.039/0.042/0.035
ln(B)).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("FoamoftheSea/KITTI_visual_odometry#3", "tamarott/SinGAN#136")
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 64


class PooledProjector(nn.Module):
    """Mean-pooled frozen patch tokens -> 2-layer MLP; text features -> linear; learnable log logit scale."""

    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.vision(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, captions = token_pairs(1024, seed=seed)          # "disk": image i in f"{i}.pt", caption i in CSV row i
    names = [f"{i}.pt" for i in range(len(tokens))]          # what os.listdir returns (any order)
    if fixed:
        listing = sorted(names, key=lambda f: int(f.split(".")[0]))
    else:
        listing = sorted(names)                              # "0.pt", "1.pt", "10.pt", "100.pt", "1000.pt", ...
    images = torch.stack([tokens[int(f.split(".")[0])] for f in listing])   # torch.load(folder / f) per file
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, captions), batch_size=BATCH,
                                         shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    model = PooledProjector()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for img_tok, txt_feat in loader:
                if step >= steps:
                    break
                img, txt = model(img_tok, txt_feat)
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=img_tok, extras={"logit_scale": scale})
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
