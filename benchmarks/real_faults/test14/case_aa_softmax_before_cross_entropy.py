"""A user's aligner returns retrieval probabilities rather than raw scores, Matching-Networks style: the forward ends
with `sims.softmax(dim=-1)` over the scaled cosine similarities (convenient at inference), and the training loop
feeds those to `F.cross_entropy(probs, arange(B))` for both directions. Cross-entropy applies its own log-softmax, so
the softmax is applied twice: the inputs it sees lie in [0, 1], each row spans at most 1, and even a perfect one-hot
row leaves a loss of log(e + B - 1) - 1 (~0.73 ln(B) at B = 32). The gradient reaching the similarities is squashed
by the first softmax's Jacobian as well, and the loss sits near chance. The Matching Networks thread: "you're applying
a softmax to the similarities. Then later you apply `cross_entropy`, which is a log softmax + NLL loss. I think you
probably want to remove the first softmax."; the Transformer-GCN-QA fix: the extra softmax "was (likely) smoothing
the final output logits resulting in a lesser gradient signal during training."
Thread: gitabcworld/MatchingNetworks#5 ("you probably want to remove the first softmax"); bowang-lab/Transformer-GCN-QA#32
("Removes erroneous extra softmax").
Fix: remove the first softmax; cross-entropy gets the scaled similarities themselves.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
2.561/2.567/2.561 (= 0.74/0.74/0.74 ln(B), ln(32) = 3.466); fixed 0.084/0.096/0.089 (= 0.02/0.03/0.03 ln(B), ln(32) =
3.466).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("gitabcworld/MatchingNetworks#5", "bowang-lab/Transformer-GCN-QA#32")
CAUSE = "temperature"
FAMILY = "loss_function"
BATCH = 32


class RetrievalAligner(ResamplerAligner):
    """Returns image->text and text->image retrieval scores for the batch."""

    def __init__(self, probabilities: bool = True):
        super().__init__()
        self.probabilities = probabilities

    def scores(self, tokens, texts):
        img, txt = self(tokens, texts)
        sims = self.logit_scale.exp() * img @ txt.t()
        if self.probabilities:
            return img, txt, sims.softmax(dim=-1), sims.t().softmax(dim=-1)
        return img, txt, sims, sims.t()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = RetrievalAligner(probabilities=not fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt, i2t, t2i = model.scores(tokens[idx], texts[idx])
            labels = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=i2t,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
