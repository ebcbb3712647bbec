"""A user who learned contrastive training from MoCo writes a CLIP-style aligner with in-batch negatives: the logits
are the (B, B) matrix `scale * img @ txt.t()`, whose positives sit on the diagonal, but the targets are copied from
MoCo's loss, `labels = torch.zeros(B, dtype=torch.long)`. In MoCo the logits are `cat([l_pos, l_neg])`, so the
positive is always column 0; here column 0 is simply whichever caption the sampler put first. Every image is told to
match that one caption and every caption that one image, a target that changes with each shuffle and carries no
pairing, and the loss never gets below ln(B). The AdCo maintainers on why their code differs from MoCo's zeros: "we
also used the other samples in the batch for the similarity calculation ... so the corresponding labels actually lie
on the diagonal of this matrix" (translated); the MoCo thread asks "shape of logits is Nx(1+K) with one columns of
positive sample, why labels are all zeros?".
Thread: maple-research-lab/AdCo#3 (MoCo's zero labels became torch.arange because "the corresponding label is
actually on the diagonal of the matrix"); facebookresearch/moco#130 ("why labels are all zeros?").
Fix: `labels = torch.arange(B)`, the diagonal, as AdCo does for its in-batch matrix.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.748/3.455/3.545 (= 1.08/1.00/1.02 ln(B), ln(32) = 3.466); fixed 0.084/0.096/0.089 (= 0.02/0.03/0.03 ln(B), ln(32) =
3.466).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("maple-research-lab/AdCo#3", "facebookresearch/moco#130")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
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
                labels = torch.arange(BATCH)
            else:
                labels = torch.zeros(BATCH, dtype=torch.long)       # MoCo: positive key indicators
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
