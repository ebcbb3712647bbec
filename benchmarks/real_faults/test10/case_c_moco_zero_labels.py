"""A user turns a MoCo/MOON-style InfoNCE into an in-batch image-text (CLIP) loss and keeps the label line
of the original: `labels = torch.zeros(B)`. In MoCo the positive logit is concatenated in column 0 of every row
so label 0 is right; in a B x B in-batch matrix the positive of row i sits on the diagonal (column i), so with
all-zero labels every image is told that caption 0 of the batch (a random sample) is its match, and every
caption that image 0 is. The positive pairs never get the target, the loss stays at (above) ln(B).
Threads: Haochen-Wang409/U2PL#93 (a user asks why the loss uses `F.cross_entropy(seg_logits / temp,
torch.zeros(num_queries).long())`; answer: "因为正样本的 logits 都摆在了第 0 位，这一点与 MoCo 的实现一致" - because the
positive logits are placed at position 0, as in MoCo; the user then reports that with the loss in their own task
"损失一直都不下降，保持在一个值不变" - the loss never goes down, it stays at one value);
HalbertCH/IEContraAST#4 ("why all the labels are 0?" - "for every reference_style, the positive sample is always
style_comparisons[0]. We set label = 0 so that the positive sample can be the numerator").
Fix: `labels = torch.arange(len(logits))`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.372/4.285/4.840 (= 1.051/1.030/1.164 ln(64), ln(64) = 4.159); fixed 0.191/0.202/0.197 (= 0.046/0.049/0.047 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("Haochen-Wang409/U2PL#93", "HalbertCH/IEContraAST#4")
CAUSE = "wrong_targets"
FAMILY = "loss_function"
BATCH = 64


def info_nce(logits: torch.Tensor, fixed: bool) -> torch.Tensor:
    # copied from a MoCo-style loss, where the positive logit sits in column 0 of every row
    if fixed:
        labels = torch.arange(len(logits))                       # the fix: in-batch positives are on the diagonal
    else:
        labels = torch.zeros(len(logits), dtype=torch.long)       # the bug: "the positive is always at index 0"
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = info_nce(logits, fixed)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
