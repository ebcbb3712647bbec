"""A user fine-tunes a CLIP-style aligner (perceiver-pytorch image side) on a captioned dataset that also
carries a class column. Reading the fine-tuning recipe, they decided that `ground_truth = torch.arange(B)`
"is not right" because it "always gives classes 0 and 1", and replaced it with the dataset's class ids:
`F.cross_entropy(logits_per_image, labels)`. The ids are valid column indices, so nothing crashes, but row i
is now told that its caption is whichever batch item happens to sit at position `class_i`. The logged CLIP
loss never leaves ln(B); with `torch.arange(B)` restored the same script learns.
Thread: openai/CLIP#83 ("the way the `ground_truth` is bring taken as a range from the `BATCH_SIZE` is not right ... I'm now mapping my prompts (the sentences) to classes")
Fix: `ground_truth = torch.arange(len(logits))` (each row's own pair), not the class ids.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss 3.53/3.53/3.48 (= 1.02/1.02/1.00 ln(B)); fixed 0.09/0.10/0.10 (= 0.03/0.03/0.03 ln(B)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from common import PerceiverAligner, token_pairs

THREADS = ("openai/CLIP#83",)
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 32
CLASSES = 10


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    labels = texts[:, :CLASSES].argmax(1)  # the dataset's class column (0..9), one per image-caption pair
    g = torch.Generator().manual_seed(seed)
    model = PerceiverAligner()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:BATCH]
            x, t, y = tokens[idx], texts[idx], labels[idx]
            img, txt = model(x, t)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            if fixed:
                ground_truth = torch.arange(len(logits))
            else:
                ground_truth = y  # the bug: class ids used as the index of each row's matching caption
            loss = 0.5 * (F.cross_entropy(logits, ground_truth) + F.cross_entropy(logits.t(), ground_truth))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, targets=ground_truth, inputs=x, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
