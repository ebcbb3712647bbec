"""COCO-style caption file (five captions per image, stored image by image) fed to a DataLoader without
`shuffle=True`: every batch is a contiguous slice of the list, so each image arrives with its other four
captions in the same batch. The contrastive loss scores those four true captions (and the four identical
copies of the image) as negatives for each row, so no model can push the loss below ~ln(5) per row, and the
gradient keeps pushing true pairs apart. The public reports: fartashf/vsepp#6 ("when a batch is formed, it
is possible that two or more of the images in that batch will be identical (they will just be paired with
different captions) ... the (5, 19) and (19, 5) entries will be incorrectly treated as scores for unaligned
embeddings"), joaoamcarvalho/mpd-public#6 ("I am curious whether the argument `shuffle=True` is missing for
the train_dataloader" - "It should definitely have `shuffle=True`").
Thread: fartashf/vsepp#6 ("will be incorrectly treated as scores for unaligned embeddings");
joaoamcarvalho/mpd-public#6 ("It should definitely have `shuffle=True`").
Fix: `DataLoader(..., shuffle=True)`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
1.662/1.738/1.721 (= 0.400/0.418/0.414 x ln(64) = 4.159); fixed 0.305/0.255/0.263 (= 0.073/0.061/0.063 x ln(64)).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("fartashf/vsepp#6", "joaoamcarvalho/mpd-public#6")
CAUSE = "false_negatives"
FAMILY = "batch_candidates"
BATCH = 64
CAPS = 5


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    images, texts = token_pairs(512, seed)
    g = torch.Generator().manual_seed(seed + 7)
    # caption file: image i's five captions are rows 5i..5i+4 (each a noisy rewording of the same text)
    images = images.repeat_interleave(CAPS, dim=0)
    captions = texts.repeat_interleave(CAPS, dim=0) + 0.1 * torch.randn(len(texts) * CAPS, texts.shape[1], generator=g)
    loader = DataLoader(TensorDataset(images, captions), batch_size=BATCH, shuffle=fixed, drop_last=True)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, cap in loader:
                img, txt = model(tok, cap)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tok, extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                step += 1
                if step >= steps:
                    break


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
