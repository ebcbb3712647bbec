"""A caption dataset with several captions per image (Flickr/COCO style: 5 per image) flattened into one row per
(image, caption) pair, image-major, and loaded with `shuffle=False` (the user shuffles "later, in the sampler",
which never happens). Every batch of 32 then holds ~6 images, each repeated with its 5 captions. The CLIP loss
uses `arange` targets, so the 4 other captions of the same image (and the 4 identical copies of the image) are
scored as negatives: the same image row is asked to pick 5 different captions, and the loss cannot go below
~ln(5) however well the model aligns. Reported for contrastive fine-tuning: "there is a high chance to have
multiple positive samples in one batch. It seems you did not explicitly handle this problem. Instead, these
positive samples are treated as negative samples" (fabawi/ImageBind-LoRA#6), and "My data has multiple texts per
image ... Otherwise, they may be considered as negative pair during the training. Is this correct?"
(openai/CLIP#464).
Thread: fabawi/ImageBind-LoRA#6 ("these positive samples are treated as negative samples"); openai/CLIP#464.
Fix: `shuffle=True` in the DataLoader (duplicates of one image then rarely share a batch).
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss
1.5734/1.5942/1.5898 (= 0.454/0.460/0.459 x ln(32) = 3.4657); fixed 0.2045/0.1847/0.1722 (= 0.059/0.053/0.050 x
ln(32) = 3.4657).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("fabawi/ImageBind-LoRA#6", "openai/CLIP#464")
CAUSE = "false_negatives"
FAMILY = "batch_candidates"
BATCH = 32
CAPTIONS = 5  # captions per image


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(256, seed)
    g = torch.Generator().manual_seed(seed + 100)
    # 5 paraphrases per image: the caption features plus a little per-caption noise; one row per pair, image-major
    image_ids = torch.arange(len(tokens)).repeat_interleave(CAPTIONS)
    captions = texts[image_ids] + 0.2 * torch.randn(len(image_ids), texts.shape[1], generator=g)
    loader = DataLoader(TensorDataset(image_ids, captions), batch_size=BATCH, shuffle=fixed, drop_last=True)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for ids, cap in loader:
                if step >= steps:
                    break
                img, txt = model(tokens[ids], cap)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=len(img), inputs=tokens[ids])
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
