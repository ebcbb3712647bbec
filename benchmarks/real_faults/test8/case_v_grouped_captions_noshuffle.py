"""A COCO-style caption file has five captions per image, stored as (image, caption) rows grouped by image id.
The user builds the training DataLoader with the library's default parameters, which do not shuffle, so every
batch is made of a few images, each repeated with all five of its captions. The in-batch CLIP loss scores the
other four captions of the same image as negatives: each row has five equally good candidates, one of which is
called the positive, so the loss cannot fall below ~ln(5) and the gradient pushes the matching captions apart.
Threads: Deci-AI/super-gradients#416 ("By default, it does not pass shuffle=True to the dataloader, so
SequentialSampler gets instantiated ... Passing shuffle=True to the dataloader params solves the issue");
technicolor-research/dsve-loc#18 ("there are five sentences labeled to captioning a image, so how to avoid the
selected negative sentence comes from the caption list in the same image").
Fix: `DataLoader(..., shuffle=True)` (batches mix captions of many images; duplicates become rare).
Validated without the tool (seeds 0,1,2; 100 steps; batch 40; final = mean of the last 5 steps): fault final loss
1.6881/1.6688/1.6917 (= 0.458/0.452/0.459 ln(B), at the ln(5) = 1.609 floor of five equal candidates);
fixed 0.2257/0.2065/0.1709 (= 0.061/0.056/0.046 ln(B)). One seed < 6 s.
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Deci-AI/super-gradients#416", "technicolor-research/dsve-loc#18")
CAUSE = "false_negatives"
FAMILY = "data_pipeline"
BATCH = 40
CAPTIONS = 5


def caption_dataset(n_images: int, seed: int):
    """(image tokens, caption features, image id) rows, five captions per image, grouped by image id."""
    tokens, texts = token_pairs(n_images, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    rows_img = tokens.repeat_interleave(CAPTIONS, dim=0)
    rows_txt = texts.repeat_interleave(CAPTIONS, dim=0)
    rows_txt = rows_txt + 0.3 * rows_txt.std() * torch.randn(rows_txt.shape, generator=g)  # paraphrases
    ids = torch.arange(n_images).repeat_interleave(CAPTIONS)
    return TensorDataset(rows_img, rows_txt, ids)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    ds = caption_dataset(400, seed)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=fixed, drop_last=True)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt_feat, ids in loader:
                img, txt = model(tok, txt_feat)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                step += 1
                if step >= steps:
                    break


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
