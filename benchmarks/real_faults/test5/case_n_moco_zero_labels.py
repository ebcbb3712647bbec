"""MoCo's all-zero labels copied into a CLIP-style loss. In MoCo (and code derived from it) the positive is put in
column 0 of an N x (1+K) logit matrix, so `labels = torch.zeros(N)` is right there. Copied into an image-text loss
whose logits are the B x B similarity matrix (positives on the diagonal), the same line tells every image that its
caption is text 0 and every caption that its image is image 0: the targets no longer point at the matching pairs
and the symmetric loss cannot fall (the two directions pull against each other).
Threads: zhang-can/CoLA#7 ("Why do you use zeros as labels in the loss function and not the original labels?" /
"Following MoCo code ... Since we put positives at 0-th locations, the GT labels should be all 0");
MediaBrain-SJTU/MedKLIP#23 ("Why cl_labels for computing the contrastive position loss are always zero?").
Fix: `labels = torch.arange(B)` for a B x B logit matrix.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.335/4.022/4.213 (= 1.042/0.967/1.013 ln(64)); fixed 0.168/0.163/0.173 (= 0.040/0.039/0.042 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("zhang-can/CoLA#7", "MediaBrain-SJTU/MedKLIP#23")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            if fixed:
                labels = torch.arange(logits.shape[0], dtype=torch.long)
            else:
                labels = torch.zeros(logits.shape[0], dtype=torch.long)  # copied from MoCo's NCE
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
