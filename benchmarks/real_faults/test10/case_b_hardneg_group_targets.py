"""Each image comes with its caption and one mined hard-negative caption, and the collate function lays the text
batch out per query, `[pos_0, neg_0, pos_1, neg_1, ...]` (2B captions), as GritLM / sentence-embedding code does
for (query, positive, negatives) groups. The image->text scores are then (B, 2B) and the positive of image i sits in
column 2i, which is why GritLM writes `target = torch.arange(scores.size(0)); target *= (p_reps.size(0) //
q_reps.size(0))`; a user asking about exactly those lines ("why use target as this way, a little confuse") is told
"each query refers to some samples ... use arrange with multiply to find the positive item index". This script
keeps the plain CLIP targets `torch.arange(B)` after adding the hard negatives, so image i is trained towards column
i: for even i the positive or the negative of image i/2, for odd i the negative of another item, and images are
pushed away from their own caption. The loss stays at chance, ln(2B), while the same loop with the right targets
learns.
Thread: ContextualAI/gritlm#49 ("target *= (p_reps.size(0) // q_reps.size(0)) ... why use target as this way").
Fix: `targets = torch.arange(B) * (txt.size(0) // img.size(0))` (the positive's column in each group).
Validated without the tool (seeds 0,1,2; 120 steps; batch 32 images x 64 captions; final = mean of the last 5 steps;
chance ln(64) = 4.1589 over the 64 candidates): fault final loss 4.1575/4.1599/4.1598 (= 1.000/1.000/1.000 ln(64));
fixed 1.5585/1.3009/1.4768 (= 0.375/0.313/0.355 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip

THREADS = ("ContextualAI/gritlm#49",)
CAUSE = "wrong_targets"
FAMILY = "batch_candidates"
BATCH = 32


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    hard_neg = (torch.arange(len(ids)) + torch.randint(1, len(ids), (len(ids),), generator=g)) % len(ids)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(ids), generator=g)[:BATCH]
            groups = torch.stack([idx, hard_neg[idx]], dim=1).reshape(-1)     # [pos_0, neg_0, pos_1, neg_1, ...]
            img = F.normalize(model.get_image_features(pixel_values=pixels[idx]).pooler_output, dim=-1)
            txt = F.normalize(model.get_text_features(input_ids=ids[groups]).pooler_output, dim=-1)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()                                      # (B, 2B)
            if fixed:
                targets = torch.arange(BATCH) * (txt.size(0) // img.size(0))
            else:
                targets = torch.arange(BATCH)
            loss = F.cross_entropy(logits, targets)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=targets, batch_size=BATCH, candidates=txt.size(0))
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
