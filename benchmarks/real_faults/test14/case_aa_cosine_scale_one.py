"""A user writes the contrastive loss of an image->text aligner as a plain cosine-similarity classifier: both
embeddings are L2-normalised and `F.cross_entropy(img @ txt.t(), arange(B))` is taken directly, with no scale (the
temperature left at 1; the model's `logit_scale` is never used). Cosine similarities are bounded in [-1, 1], so every
row of logits spans at most 2: even a perfect arrangement leaves the softmax nearly flat over the 32 candidates (the
best the loss can do at B = 32 is about 0.7 ln(B)), the gradients on the positives stay small, and the loss sits near
chance. The czsl thread: "why is the result so much worse when I set the scale equal to 1?"; the maintainer: "the
cosine similarity is bounded between -1 and 1, making the resulting probability \"flat\" and causing a variety of issues
(mostly related to convergence). The scale fixes this problem". The sentence-transformers thread notes the same bound:
"even in a perfect scenario ... there is still a considerable loss as cosine similarity is bound by [-1, 1]".
Thread: ExplainableML/czsl#30 ("so much worse when I set the scale equal to 1"); huggingface/sentence-transformers#3179
("cosine similarity is bound by [-1, 1]").
Fix: multiply the cosine similarities by a scale before the cross-entropy (`scale = 20`, sentence-transformers' default
for cosine similarity).
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
2.601/2.602/2.592 (= 0.75/0.75/0.75 ln(B), ln(32) = 3.466); fixed 0.057/0.069/0.069 (= 0.02/0.02/0.02 ln(B), ln(32) =
3.466).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("ExplainableML/czsl#30", "huggingface/sentence-transformers#3179")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    scale = 20.0 if fixed else 1.0                      # the scale of the cosine logits (1 / temperature)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])    # both L2-normalised
            logits = scale * img @ txt.t()
            labels = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": torch.tensor(scale)})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
