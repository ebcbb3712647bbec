"""A user who learned contrastive losses from SimCLR/MoCo code writes their own CLIP-style loss for an image-text
aligner and keeps the line they know, `labels = torch.zeros(logits.shape[0], dtype=torch.long)`. In MoCo and
sthalles/SimCLR that is right because the positive logit is concatenated into column 0 of an N x (1+K) matrix; here
the logits are the full B x B image-text similarity matrix whose positives sit on the diagonal. Every row is told
that caption 0 of the batch (and every caption that image 0) is its match: the targets point at an arbitrary item,
not at the pairs, so there is nothing consistent to learn and the loss stays at ln(B). The SimCLR thread: "So all
the entries of "labels" are all zeros. But I think according to the paper, there should be an entry as 1 for the
positive pair?" with the answer "All the N positives pairs' Cosine Similarity are stored in logits's first column";
the BalaGAN thread: "NT_xent_loss the lable is Zero ? ... is not torch.range() ?" - "the similarity score which goes
to the numerator (the 'positive' one) is in `logits[i][0]` and therefore we set the label to be `0`".
Thread: sthalles/SimCLR#29 ("All the N positives pairs' Cosine Similarity are stored in logits's first column"); orpatashnik/BalaGAN#3 ("is not torch.range() ?").
Fix: targets that point at the diagonal of the B x B matrix, `labels = torch.arange(B)`.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.520/3.660/3.730 (= 1.02/1.06/1.08 ln(B), ln(32) = 3.466); fixed 0.078/0.076/0.098 (= 0.02/0.02/0.03 ln(B), ln(32) = 3.466).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("sthalles/SimCLR#29", "orpatashnik/BalaGAN#3")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 32


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
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
            if fixed:
                labels = torch.arange(logits.shape[0])
            else:
                labels = torch.zeros(logits.shape[0], dtype=torch.long)   # positive key indicators, as in MoCo
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
