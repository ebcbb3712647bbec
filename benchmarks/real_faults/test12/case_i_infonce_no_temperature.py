"""A hand-written symmetric InfoNCE on L2-normalised embeddings that never applies its temperature: the
cosine similarities (in [-1, 1]) go straight into cross_entropy. With 63 negatives the best reachable loss is about
ln(1 + 63/e) ~ 3.2 even for perfectly aligned pairs, so the softmax can never become confident and the loss flattens
near 0.79 ln(B) while the same loss divided by 0.07 learns. The thread asks exactly this of a released loss:
"Regarding L#74-77, should I scale the logits with the temperature value (0.07) ? I am little confused as scaling
logits with temperature value is not directly stated in the paper."
Thread: hche11/Localizing-Visual-Sounds-the-Hard-Way#2 ("should I scale the logits with the temperature value (0.07) ?").
Fix: `logits = img @ txt.t() / 0.07`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.3009/3.3038/3.2929 (= 0.794/0.794/0.792 ln(64)); fixed 0.2143/0.2602/0.2581 (0.052/0.063/0.062 ln(64)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import PerceiverAligner, token_pairs

THREADS = ("hche11/Localizing-Visual-Sounds-the-Hard-Way#2",)
CAUSE = "temperature"
FAMILY = "loss_function"
BATCH = 64
TEMPERATURE = 0.07


def info_nce(img, txt, fixed: bool):
    """The user's own symmetric InfoNCE on L2-normalised embeddings."""
    logits = img @ txt.t()
    if fixed:
        logits = logits / TEMPERATURE      # the fix; the bug: cosine similarities go straight into the softmax
    labels = torch.arange(len(img))
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    return loss, logits, labels


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    model.logit_scale.requires_grad_(False)    # the loss has its own fixed temperature
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            loss, logits, labels = info_nce(img, txt, fixed)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
