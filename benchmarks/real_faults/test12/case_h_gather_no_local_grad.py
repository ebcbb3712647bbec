"""A user moves a working CLIP-style aligner to torch.distributed and gathers the image and text embeddings of all
ranks with `dist.all_gather` before the InfoNCE, so each row is scored against every rank's candidates. The
collective is not differentiable: the gathered tensors are fresh buffers with no autograd history, and the helper
never puts the local rank's own (grad-carrying) embeddings back into the gathered list. Backward raises no error
because the loss still depends on `logit_scale`, so training runs, the scale moves, and neither tower ever gets a
gradient: the loss never gets below chance. The multimodal PR names exactly this: "This diff also fixes an existing bug in the
previous logic of gather tensors, that prevents backpropagating to the local rank when `backprop_in_gather` is set
to `False`"; GradCache's author: "In Pytorch, distributed operations are not differentiable so it is at the moment
necessary to handcraft all communication for computing the gradients of the representations". Reproduced on a
single-process gloo group (world size 1), where the bug is the same as on N ranks.
Thread: facebookresearch/multimodal#361 ("fixes an existing bug ... that prevents backpropagating to the local
rank"); luyug/GradCache#25 ("distributed operations are not differentiable").
Fix: put the local embeddings back into the gathered list (`gathered[rank] = x`), as open_clip's gather does.
Validated without the tool (seeds 0,1,2; 60 steps; batch 32; final = mean of the last 5 steps): fault final loss
5.212/4.632/4.835 (= 1.50/1.34/1.40 ln(B), ln(32) = 3.466); fixed 0.170/0.155/0.177 (= 0.05/0.04/0.05 ln(B), ln(32) = 3.466).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("facebookresearch/multimodal#361", "luyug/GradCache#25")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 32


def _init_process_group():
    if not dist.is_initialized():
        store = os.path.join(tempfile.mkdtemp(), "store")
        dist.init_process_group("gloo", init_method="file://" + store, rank=0, world_size=1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    _init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def gather(x):
        gathered = [torch.zeros_like(x) for _ in range(world)]
        dist.all_gather(gathered, x)
        if fixed:
            gathered[rank] = x
        return torch.cat(gathered)

    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            all_img, all_txt = gather(img), gather(txt)
            scale = model.logit_scale.exp()
            logits = scale * all_img @ all_txt.t()
            labels = torch.arange(len(all_img))
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt}, logits=logits,
                      batch_size=BATCH, candidates=len(all_img), inputs=tokens[idx],
                      extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
