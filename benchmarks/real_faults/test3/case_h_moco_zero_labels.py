"""A user ports a MoCo / MOON style InfoNCE into an image-caption aligner and keeps its targets,
`labels = torch.zeros(B, dtype=torch.long)`. In MoCo the positive is put in column 0 of an (B, 1+K) logit
matrix, so all-zero targets are right; in an in-batch (B, B) image->text matrix the positive of row i is
column i, so zeros tell every image that caption 0 of the batch is its match (and every caption that image 0
is). No embedding can satisfy that for a random batch: the loss sits at ln(B) while the pairs are learnable.
Threads: amazon-science/video-contrastive-learning#5 ("You seems to be setting the labels to all zeros where
there is no indicator for positive pairs but instead everything is a negative pair"; answer: "positive sample
is always on position 0 in the logits"); Xtra-Computing/MOON#8 ("Why positive and negative cases have the same
label as 0"; answer: "The first column is the positive pair ... by setting the label to 0"); luyug/Reranker#10
("target_label is always zero").
Fix: `labels = torch.arange(len(logits))` (the positive of row i is column i).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.2796/4.5657/4.0640 (= 1.029/1.098/0.977 x ln(B)); fixed 0.1308/0.1405/0.1238 (= 0.032/0.034/0.030 x ln(B));
ln(B) = 4.1589.
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("amazon-science/video-contrastive-learning#5", "Xtra-Computing/MOON#8", "luyug/Reranker#10")
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 64


def info_nce(logits, labels):
    # MoCo-style: cross-entropy of the logits against the positive's column, both directions
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt_in in loader:
                if step >= steps:
                    break
                img, txt = model(tok, txt_in)
                logits = model.logit_scale.exp() * img @ txt.t()
                if fixed:
                    labels = torch.arange(len(logits))
                else:
                    labels = torch.zeros(len(logits), dtype=torch.long)  # copied from the MoCo loss
                loss = info_nce(logits, labels)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          targets=labels, batch_size=BATCH)
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
