"""Data-parallel CLIP with features gathered across ranks by `torch.distributed.all_gather` (simulated in one
process: world size 2, the other rank's features computed by the same replica on its own batch). The
gathered copies carry no autograd graph, and the script never puts this rank's own, differentiable
features back into the gathered list, so the loss reaches the model only through the logit scale:
the towers get no gradient at all and the loss stays at ln(B*W). Threads: 3dlg-hcvc/DuoduoCLIP#10 ("when
I replace dist.nn.all_gather with dist.all_gather, it shows no gradient ... the loss won't go down");
kohjingyu/fromage#33 ("torch.distributed.all_gather does not have grads"). Fix: put the local tensors back
into their slot after the gather (open_clip's `gathered[rank] = features`).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64 per rank, 128 candidates; final = mean of the
last 5 steps): fault 6.267/6.460/6.836 at step 0 and 5.970/6.354/6.646 at the end, above ln(128) = 4.852
(only the logit scale moves); fixed 0.432/0.443/0.475.
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("3dlg-hcvc/DuoduoCLIP#10", "kohjingyu/fromage#33")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 64
WORLD, RANK = 2, 0


def all_gather(local: torch.Tensor, others: list) -> list:
    """What dist.all_gather hands back: a copy of every rank's tensor, none of them attached to the graph."""
    out = [None] * WORLD
    out[RANK] = local.detach().clone()
    for r, t in zip([r for r in range(WORLD) if r != RANK], others):
        out[r] = t.detach().clone()
    return out


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (WORLD, BATCH), generator=g)
            img, txt = model(tokens[idx[RANK]], texts[idx[RANK]])
            with torch.no_grad():  # the other rank's forward, received through the collective
                o_img, o_txt = model(tokens[idx[1 - RANK]], texts[idx[1 - RANK]])
            all_img, all_txt = all_gather(img, [o_img]), all_gather(txt, [o_txt])
            if fixed:
                all_img[RANK], all_txt[RANK] = img, txt
            all_img, all_txt = torch.cat(all_img), torch.cat(all_txt)
            logits = model.logit_scale.exp() * all_img @ all_txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, candidates=BATCH * WORLD, inputs=tokens[idx[RANK]],
                      extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
