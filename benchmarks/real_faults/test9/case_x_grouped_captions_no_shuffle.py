"""Several captions per image, rows grouped by image, loader not shuffled. The user's Flickr/COCO-style CSV
lists each image once per caption (here 8 captions per image, consecutive rows), and the DataLoader is built
with shuffle=False (the CSV "was already random"), so every batch of 64 holds only ~8 distinct images, each with
8 near-identical captions. `ground_truth = torch.arange(B)` still marks only the diagonal as positive, so 7 of
every row's candidates are true matches scored as negatives: the loss cannot go below ~ln(8) no matter how well
the towers align. Exactly the question raised in the public threads: "the dataset has several captions per image,
but the loss uses ground_truth = torch.arange(len(image_logits)) ... isn't the same-image problem considered?"
Thread: IDEA-CCNL/Fengshenbang-LM#276 ("数据集中一个图片有多个caption，但是训练loss计算的时候ground_truth =
torch.arange(len(image_logits))... 请问不用考虑同图的问题吗？"); echonet/echo_CLIP#8 ("patients with the same
disease might have similar reports. How did you address this issue when sampling batch data").
Fix: shuffle the rows (`order = torch.randperm(n)`, i.e. DataLoader(shuffle=True)) so a batch rarely holds two
captions of one image.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.124/2.147/2.161 (= 0.51/0.52/0.52 ln(B), ln(64) = 4.1589); fixed 0.170/0.213/0.219 (= 0.041/0.051/0.053 ln(B)).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("IDEA-CCNL/Fengshenbang-LM#276", "echonet/echo_CLIP#8")
CAUSE = "false_negatives"
FAMILY = "data_pipeline"
BATCH = 64
CAPS = 8  # captions per image


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(640, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    # the CSV: one row per (image, caption), the captions of one image on consecutive rows
    img_rows = tokens.repeat_interleave(CAPS, dim=0)
    cap_rows = texts.repeat_interleave(CAPS, dim=0) + 0.1 * torch.randn(len(texts) * CAPS, texts.shape[1], generator=g)
    n = len(img_rows)
    model = ResamplerAligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            order = torch.randperm(n) if fixed else torch.arange(n)  # BUG: DataLoader(shuffle=False)
            for b in range(n // BATCH):
                if step >= steps:
                    break
                idx = order[b * BATCH:(b + 1) * BATCH]
                img, txt = model(img_rows[idx], cap_rows[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                ground_truth = torch.arange(len(logits))
                loss = 0.5 * (F.cross_entropy(logits, ground_truth) + F.cross_entropy(logits.t(), ground_truth))
                opt.zero_grad(); loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, targets=ground_truth, inputs=img_rows[idx])
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
