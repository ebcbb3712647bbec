"""A user fine-tunes a Perceiver-resampler aligner on a folder of images with a caption list built in the
same (directory listing) order. For reproducibility they added `image_paths = sorted(image_paths)` in the
dataset's __init__, but left `captions` in listing order: every image now comes with the caption of some
other file. Nothing crashes, shapes are right, batches look fine; the CLIP loss just sits at ln(B) for the
whole run while the same script without the sort learns in a few dozen steps.
Thread: cloneofsimo/lora#197 ("the _self.instance_images_path_ did not align with _self.captions_ ... self.instance_images_path is sorted but not self.captions")
Fix: sort the (path, caption) pairs together: `paths, captions = zip(*sorted(zip(paths, captions)))`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.14/4.15/4.14 (= 1.00/1.00/1.00 ln(B)); fixed 0.16/0.17/0.16 (= 0.04/0.04/0.04 ln(B)).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("cloneofsimo/lora#197",)
CAUSE = "misaligned_pairs"
FAMILY = "data_pipeline"
BATCH = 64


class FolderDataset:
    """Images 'on disk' keyed by file name; captions in a list built in the directory-listing order."""

    def __init__(self, files: dict, listing: list, captions: list, fixed: bool = False):
        self.files = files
        paths, captions = list(listing), list(captions)  # captions[i] describes listing[i]
        if fixed:
            paths, captions = map(list, zip(*sorted(zip(paths, captions), key=lambda pc: pc[0])))
        else:
            paths = sorted(paths)  # the bug: the image paths are sorted, the captions keep the listing order
        self.paths, self.captions = paths, captions

    def __len__(self):
        return len(self.paths)

    def batch(self, idx):
        return (torch.stack([self.files[self.paths[i]] for i in idx.tolist()]),
                torch.stack([self.captions[i] for i in idx.tolist()]))


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    listing = [f"img_{int(k):05d}.jpg" for k in torch.randperm(len(tokens), generator=g)]  # os.listdir order
    files = dict(zip(listing, tokens))
    ds = FolderDataset(files, listing, list(texts), fixed=fixed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ds), (BATCH,), generator=g)
            x, t = ds.batch(idx)
            img, txt = model(x, t)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=x, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
