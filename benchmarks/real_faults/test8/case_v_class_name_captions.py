"""A user fine-tunes a CLIP-style aligner as a classifier: a CIFAR-10-like set whose "caption" is just the class
name, fed to the ordinary in-batch CLIP loss with batch 64. With 10 classes a batch holds ~6 images of each class
and ~6 identical captions; for each image the CLIP targets call one copy of its class name the positive and the
other copies negatives, and for each caption the other images of its class are negatives. The loss cannot go
below ~ln(6) and the gradient pushes same-class images apart; the users report the loss falling in the first
epoch and then oscillating, with accuracy below zero-shot.
Threads: OFA-Sys/Chinese-CLIP#240 ("text为类别的中文名称 ... loss只有第一个epoch下降，后续一直震荡。且在训练集和验证集上准确率都很低");
mlfoundations/open_clip#821 ("some of the images within a batch are from the same sequence, images will be alike and
are likely to have same label. But model will still try to contrast it").
Fix: mask the other same-class entries out of the logits before the loss
(`logits = logits.masked_fill((y[:, None] == y[None]) & ~eye, -inf)`): duplicates are no longer scored as negatives.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
1.9546/1.9749/1.9485 (= 0.470/0.475/0.469 ln(B), ~ln(6.4) = 1.86 floor);
fixed 0.0187/0.0120/0.0129 (= 0.0045/0.0029/0.0031 ln(B)). One seed < 4 s.
Ground truth: false_negatives.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("OFA-Sys/Chinese-CLIP#240", "mlfoundations/open_clip#821")
CAUSE = "false_negatives"
FAMILY = "batch_candidates"
BATCH = 64
CLASSES = 10


def class_dataset(n: int, seed: int):
    """Images: their class prototype's patch tokens plus per-image variation; captions: the class name's
    features, identical for every image of a class."""
    proto_tokens, proto_text = token_pairs(CLASSES, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    tokens = proto_tokens[y] + 0.7 * torch.randn(n, *proto_tokens.shape[1:], generator=g)
    return tokens, proto_text[y], y


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts, labels = class_dataset(5000, seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    eye = torch.eye(BATCH, dtype=torch.bool)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            y = labels[idx]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            if fixed:
                logits = logits.masked_fill((y[:, None] == y[None]) & ~eye, float("-inf"))
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
