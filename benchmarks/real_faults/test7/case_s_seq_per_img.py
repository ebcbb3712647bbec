"""Caption datasets with several captions per image (Flickr/COCO: 5) are often loaded captioning-style: the loader
draws a batch of images and expands each into `seq_per_img` rows, one per caption, as in self-critical.pytorch's
loader ("each batch contains 5 sequences which are not shuffled", ruotianluo/self-critical.pytorch#200). Fed to a
CLIP loss, every image then appears `seq_per_img` times in the same batch, and the diagonal-only targets score its
other captions (and its own copies) as negatives. Chinese-CLIP#266 hits the same wall from class-prompt texts:
"一个batch内60%的图片的标签一致 ... 使用对比学习loss作为损失函数是不是就不太合适" (60% of a batch share the same
label: is the contrastive loss still appropriate?), with a follow-up "同一个batch里不应该使用相同的文本标签或者图片"
(a batch should not contain the same text or image twice) and one that the loss and accuracy "几乎没有提升" (barely
improved). Here 8 identical images per batch make the 8 rows and the 8 columns of each group indistinguishable: the
loss cannot go below ln(8) however well the model aligns.
Thread: ruotianluo/self-critical.pytorch#200 ("each batch contains 5 sequences which are not shuffled");
OFA-Sys/Chinese-CLIP#266 ("一个batch内60%的图片的标签一致").
Fix: `SEQ_PER_IMG = 1` (one randomly drawn caption per image, BATCH distinct images per batch).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.1205/2.1528/2.1565 (= 0.510/0.518/0.519 ln(64), just above the ln(8) = 2.0794 floor); fixed 0.1296/0.1202/0.1453
(0.031/0.029/0.035 ln(64)).
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("ruotianluo/self-critical.pytorch#200", "OFA-Sys/Chinese-CLIP#266")
CAUSE = "false_negatives"
FAMILY = "batch_candidates"
BATCH = 64
CAPTIONS = 8  # captions per image in the dataset


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(512, seed=0)
    gd = torch.Generator().manual_seed(1)
    captions = texts.unsqueeze(1) + 0.3 * torch.randn(len(texts), CAPTIONS, texts.shape[1], generator=gd)
    SEQ_PER_IMG = 1 if fixed else CAPTIONS
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            img_idx = torch.randperm(len(tokens), generator=g)[: BATCH // SEQ_PER_IMG]
            img_idx = img_idx.repeat_interleave(SEQ_PER_IMG)                      # one row per (image, caption)
            if SEQ_PER_IMG == 1:
                cap_idx = torch.randint(0, CAPTIONS, (BATCH,), generator=g)
            else:
                cap_idx = torch.arange(SEQ_PER_IMG).repeat(BATCH // SEQ_PER_IMG)
            x, t = tokens[img_idx], captions[img_idx, cap_idx]
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=x)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
