"""More negatives from the accumulation window, positives pointed at the wrong columns: to get more than the
micro-batch's negatives under gradient accumulation, the user keeps the (detached) caption embeddings of the earlier
micro-batches of the current accumulation window (the ContAccum idea) and scores each image against
cat([earlier captions, current captions]). The targets stay `torch.arange(B)`, written for the plain in-batch
matrix, so from the second micro-batch of every window on they point at the cached captions of the previous
micro-batch (other pairs) instead of the current ones, which sit at offset len(bank). Three of every four micro-steps
train each image towards an unrelated caption.
Thread: KevinMusgrave/pytorch-metric-learning#138 ("How to use a queue of negative samples as done in MoCo" - "It
looks like you're setting labels to range(32). That means there will be no positive pairs in the batch. The labels
tensor needs to be constructed such that positive pairs have the same label"); huggingface/sentence-transformers#3612
("enabling cached embeddings from previous steps to be reused as in-batch negatives" to enlarge the negative
pool beyond what gradient accumulation gives).
Fix: `labels = torch.arange(B) + len(bank_rows)` (the positives' columns in the concatenated candidates).
Validated without the tool (seeds 0,1,2; 120 micro-steps = 30 updates of 4 micro-batches of 32; chance from the
candidates passed to observe: 128 at the last step; final = mean of the last 5 micro-steps): fault final loss
4.366/4.357/4.488 (= 0.900/0.898/0.925 x ln(B), ln(B) = 4.852); fixed 0.274/0.237/0.304 (= 0.056/0.049/0.063 x ln(B), ln(B) = 4.852).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, D, DT, E

THREADS = ("KevinMusgrave/pytorch-metric-learning#138", "huggingface/sentence-transformers#3612")
CAUSE = "wrong_targets"
FAMILY = "gradient_accumulation"
BATCH = 32   # micro-batch
ACCUM = 4


class Retriever(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.scale = 20.0   # fixed inverse temperature, as in MultipleNegativesRankingLoss

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Retriever()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    bank = []   # detached caption embeddings of the earlier micro-batches of this accumulation window
    with watch(model, opt, batch_size=BATCH) as w:
        opt.zero_grad()
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            candidates = torch.cat(bank + [txt])
            logits = model.scale * img @ candidates.t()
            bank_rows = len(candidates) - BATCH
            labels = torch.arange(BATCH) + bank_rows if fixed else torch.arange(BATCH)
            loss = F.cross_entropy(logits, labels)
            (loss / ACCUM).backward()
            w.observe(step, losses={"contrastive": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, candidates=logits.shape[1])
            bank.append(txt.detach())
            if (step + 1) % ACCUM == 0:
                opt.step(); opt.zero_grad()
                bank = []


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
