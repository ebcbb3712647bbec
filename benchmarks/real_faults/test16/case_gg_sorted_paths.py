"""The user fine-tunes a small CLIP on a folder of image files whose captions come from the file names. The
dataset globs the folder, builds the caption list from that (arbitrary) order, and only afterwards
sorts the image paths, so image k is served with the caption of another file: the loss never leaves ln(B).

Thread: cloneofsimo/lora#197 ("self.instance_images_path is sorted but not self.captions")
Fix: sort the image paths before the captions are read from them.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.1187/4.1365/4.1172 (= 0.990/0.995/0.990 ln(B)); fixed 1.5760/1.0877/1.2461 (= 0.379/0.262/0.300 ln(B)).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("cloneofsimo/lora#197",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"
BATCH = 64
N = 1024


class CaptionedFolder(torch.utils.data.Dataset):
    """Images `NNNN.png` in a folder; each caption is looked up from the file's stem."""

    def __init__(self, pixels, captions_by_stem, listing, fixed=False):
        self.pixels, self.captions_by_stem = pixels, captions_by_stem
        self.instance_images_path = list(listing)
        if fixed:
            self.instance_images_path = sorted(self.instance_images_path)
        self.captions = [self.captions_by_stem[int(p.split("/")[-1].split(".")[0])] for p in self.instance_images_path]
        self.instance_images_path = sorted(self.instance_images_path)

    def __len__(self):
        return len(self.instance_images_path)

    def __getitem__(self, i):
        stem = int(self.instance_images_path[i].split("/")[-1].split(".")[0])
        return self.pixels[stem], self.captions[i]


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(N, seed)
    g = torch.Generator().manual_seed(seed)
    listing = [f"data/instance/{i:04d}.png" for i in torch.randperm(N, generator=g).tolist()]  # glob order
    ds = CaptionedFolder(pixels, ids, listing, fixed=fixed)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, generator=g)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = iter(())
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            try:
                px, tok = next(batches)
            except StopIteration:
                batches = iter(loader)
                px, tok = next(batches)
            out = model(input_ids=tok, pixel_values=px, return_loss=True)
            loss = out.loss
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
