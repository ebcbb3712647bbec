"""Two-GPU data-parallel CLIP alignment with gathered negatives: each rank all-gathers the text (and image) features
of every rank, so its logits are (B_local, world * B_local), local rows against all gathered columns. The rank's
positives are then the columns `rank * B_local + i`, but the loss keeps the single-GPU targets `arange(B_local)`.
Rank 0 is right by luck; on rank 1 every image is told its caption is rank 0's caption at the same position.
sentence-transformers#3453 is this class of bug in a released library: after gathering, the labels assumed one
layout of the gathered columns while the columns were laid out differently, "It would have resulted in training
anchors to align with their hard negatives instead: awful!"; in #3442 (gather_across_devices) the labels are shifted
by the rank's offset for exactly this reason ("Adjust the range_label"). Both ranks are simulated in one process
(each rank's loss on its own shard, averaged as DDP averages the gradients; the gathered columns carry gradients, as
with torch.distributed.nn.all_gather). Half of all rows are trained towards an unrelated caption, and the loss stays
far from what the same run reaches with the right offsets.
Thread: huggingface/sentence-transformers#3453 ("training anchors to align with their hard negatives instead");
huggingface/sentence-transformers#3442 ("Adjust the range_label").
Fix: `labels = torch.arange(B_LOCAL) + rank * B_LOCAL`.
Validated without the tool (seeds 0,1,2; 100 steps; 2 ranks x 32 = 64 candidates; final = mean of the last 5
steps): fault final
loss 3.4639/3.4383/3.5038 (= 0.833/0.827/0.843 ln(64), ln(64) = 4.1589); fixed 0.1711/0.1874/0.1618
(0.041/0.045/0.039 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import PerceiverAligner, token_pairs

THREADS = ("huggingface/sentence-transformers#3453", "huggingface/sentence-transformers#3442")
CAUSE = "wrong_targets"
FAMILY = "distributed"
WORLD, B_LOCAL = 2, 32
BATCH = WORLD * B_LOCAL


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=0)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)  # DistributedSampler: shard r = rows r*B..(r+1)*B
            img, txt = model(tokens[idx], texts[idx])
            all_img, all_txt = img, txt                                  # all_gather over ranks (with gradients)
            scale = model.logit_scale.exp()
            losses, rows, targets = [], [], []
            for rank in range(WORLD):
                sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
                logits_i = scale * img[sl] @ all_txt.t()                # (B_local, world * B_local)
                logits_t = scale * txt[sl] @ all_img.t()
                if fixed:
                    labels = torch.arange(B_LOCAL) + rank * B_LOCAL
                else:
                    labels = torch.arange(B_LOCAL)                      # copied from the single-GPU loss
                losses.append(0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)))
                rows.append(logits_i); targets.append(labels)
            loss = torch.stack(losses).mean()                           # DDP averages the ranks' gradients
            logits = torch.cat(rows)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=torch.cat(targets), batch_size=BATCH, inputs=tokens[idx],
                      extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
