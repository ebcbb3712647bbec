"""MoCo/MOON-style `labels = torch.zeros(N)` reused for an in-batch CLIP matrix. In MoCo-style losses the
logits are `cat([l_pos, l_neg], dim=1)`, so the positive is always column 0 and all-zero labels are right; the
user moves to in-batch negatives (an (B, B) image->text matrix from a flamingo-pytorch PerceiverResampler aligner,
positives on the diagonal) but keeps the label line. Every image is now told that caption 0 of the batch is its
match, and every caption that image 0 is: the targets do not point at the matching pairs, the pair on the diagonal
is pushed down like any negative, and with unit-norm embeddings the model cannot make one caption win for every
image: the loss stays at or above ln(B) and the true pairs are never learned. The threads show how easily the convention is misread: "why it is implemented by
cross-entropy loss with labels (zeros tensor)?" - "by setting labels to 0, x[class] (i.e., x[0]) is the positive
pair part"; and "shouldn't the target label be [1, 0...0] ... why is it that in the pseudo-code we are minimizing
the crossentropy between logits and just zeros?".
Thread: Xtra-Computing/MOON#1 ("by setting labels to 0, x[class] (i.e., x[0]) is the positive pair part");
taesungp/contrastive-unpaired-translation#42 ("The target that is given is torch.zeros(B*S) [0...0]").
Fix: `labels = torch.arange(len(logits))` (the diagonal) instead of `torch.zeros(len(logits))`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 48; final = mean of the last 5 steps): fault final loss
4.4458/3.8677/4.0682 (= 1.148/0.999/1.051 ln(48)); fixed 0.1606/0.1602/0.1008 (= 0.041/0.041/0.026 ln(48)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("Xtra-Computing/MOON#1", "taesungp/contrastive-unpaired-translation#42")
CAUSE = "wrong_targets"
FAMILY = "loss_function"
BATCH = 48


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner(latents=8, depth=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(len(logits)) if fixed else torch.zeros(len(logits), dtype=torch.long)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, targets=labels, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
