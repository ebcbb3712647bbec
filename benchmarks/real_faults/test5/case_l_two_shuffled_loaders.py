"""Images and captions are kept in two parallel datasets and the user builds one DataLoader for each, both
with `shuffle=True`. Each loader draws its own permutation, so batch i holds images from one random subset and
captions from another: the diagonal of the logit matrix pairs an image with an unrelated caption and nothing
can be learned (the loss sits at ln(B)). It looks fine in code review because each loader alone is correct.
Thread: xu-ji/IIC#80 ("`DataLoader` takes a `sampler` argument where you can specify a deterministic shuffling.
Deterministic because the idea is each of the different dataloaders should be sampling the same image in each
timestep").
Fix: one DataLoader over `TensorDataset(tokens, texts)` so images and captions are shuffled together.
Validated without the tool (seeds 0,1,2; 90 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1979/4.2075/4.2007 (= 1.009/1.012/1.010 ln(B), ln(B) = 4.1589); fixed 0.6048/0.6749/0.6036 (= 0.145/0.162/0.145 ln(B), ln(B) = 4.1589).
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from torch.utils.data import DataLoader, TensorDataset
from common import PerceiverAligner, token_pairs, clip_loss

THREADS = ("xu-ji/IIC#80",)
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 64


def batches(tokens, texts, fixed):
    while True:
        if fixed:
            yield from DataLoader(TensorDataset(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True)
        else:  # BUG: two loaders, two independent shuffles
            img_loader = DataLoader(TensorDataset(tokens), batch_size=BATCH, shuffle=True, drop_last=True)
            txt_loader = DataLoader(TensorDataset(texts), batch_size=BATCH, shuffle=True, drop_last=True)
            for (tok,), (txt,) in zip(img_loader, txt_loader):
                yield tok, txt


def train(watch, steps: int = 90, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    data = batches(tokens, texts, fixed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            tok, txt_in = next(data)
            img, txt = model(tok, txt_in)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img), inputs=tok)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
