"""A user builds an image-caption training set from an image brick indexed from 0 and a caption table keyed by the
1-based stimulus ids found in the file names (`shared0953_nsd69215.png`). `__getitem__` looks the caption up
with the image's file-name id as if it were 0-based, so every image comes with the caption of the next image:
the pairs are consistently shifted by one. Nothing crashes, the batches look fine, but no image matches its
caption and the contrastive loss sits at ln(B).
Threads: tknapen/nsd_access#6 ("if I want to read and show that same image from the brick ... i need to query for
69214" / "i can now confirm that this is also the case for the captions"); furkanbiten/GoodNews#7 ("it seems the
files do not use the same indices").
Fix: `captions[nsd_id - 1]` (convert the 1-based id to the 0-based row of the caption table).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1370/4.1458/4.1515 (= 0.995/0.997/0.998 ln(B));
fixed 1.2776/1.4094/1.2027 (= 0.307/0.339/0.289 ln(B)). One seed < 15 s.
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, Dataset
from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("tknapen/nsd_access#6", "furkanbiten/GoodNews#7")
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 64


class NSDCaptions(Dataset):
    def __init__(self, n: int, seed: int, fixed: bool):
        pixels, ids = image_caption_pairs(n + 1, seed=seed)
        self.images = pixels[:n]                 # the image brick, row k = stimulus k+1
        self.nsd_ids = torch.arange(1, n + 1)    # 1-based ids from the file names
        self.captions = ids                      # caption table, row k = stimulus k+1 (one spare row at the end)
        self.fixed = fixed

    def __len__(self):
        return len(self.images)

    def __getitem__(self, k):
        nsd_id = int(self.nsd_ids[k])
        cap = self.captions[nsd_id - 1] if self.fixed else self.captions[nsd_id]
        return self.images[k], cap


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    loader = DataLoader(NSDCaptions(2048, seed, fixed), batch_size=BATCH, shuffle=True, drop_last=True)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for pixels, ids in loader:
                out = model(input_ids=ids, pixel_values=pixels)
                logits = out.logits_per_image
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                          logits=logits, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                step += 1
                if step >= steps:
                    break


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
