"""A user copies an InfoNCE helper from a MoCo/GCD-style codebase into an image->text CLIP loop. In that code the
logits are rearranged so that the positive sits in column 0 of every row, hence `labels = torch.zeros(N)`; here the
logits are the plain in-batch (B, B) matrix whose positives are on the diagonal, but the zeros came along. Every row
is told its caption is caption 0 of the batch, a different random caption each step, so the encoders get no
consistent signal and the loss sits near ln(B) (the model can only push all rows toward ties). The confusion is the
one users voice in public: "labels = torch.zeros(logits.shape[0], dtype=torch.long) ... why are the labels all 0,
shouldn't this be changed?" and "why does multiplying logits with an all-zero matrix cause the contrast loss...".
Thread: sgvaze/generalized-category-discovery#28 ("在函数info_nce_logits中，最后对labels的赋值为什么全部为0了呢？
labels = torch.zeros(logits.shape[0], dtype=torch.long)"); Xtra-Computing/MOON#14 ("labels =
torch.zeros(x.size(0)).cuda().long()").
Fix: labels = torch.arange(len(logits)) (the diagonal holds the positives of an in-batch matrix).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.465/4.579/4.655 (= 1.07/1.10/1.12 ln(B), ln(64) = 4.159); fixed 0.127/0.155/0.122 (= 0.031/0.037/0.029 ln(B)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("sgvaze/generalized-category-discovery#28", "Xtra-Computing/MOON#14")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def info_nce_loss(logits: torch.Tensor, fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # copied from a MoCo-style helper: "positive is always at index 0"
    labels = torch.arange(len(logits)) if fixed else torch.zeros(logits.shape[0], dtype=torch.long)
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    return loss, labels


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss, labels = info_nce_loss(logits, fixed)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
