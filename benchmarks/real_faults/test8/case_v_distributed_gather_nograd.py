"""A user scales CLIP-style training to several GPUs and gathers the features of all ranks with
`torch.distributed.all_gather` before the loss, then concatenates the gathered list and computes the logits
from it. `dist.all_gather` writes into fresh buffers and keeps no autograd history, so the concatenated
features are constants: the towers get no gradient from the loss at all, only the logit scale (which
multiplies the gathered similarities) moves, and the loss stays at chance. open_clip / Chinese-CLIP put the
local shard back into the gathered list (`gathered[rank] = features`) so the rank's own features carry
gradient. Reproduced in one process with a gloo group (world_size 1: the gather is the same call, and its
output is just as detached).
Thread: OFA-Sys/Chinese-CLIP#54 ("torch.distributed.all_gather出来的结果gathered_image_features没有梯度，训练的话不能反向传播。
所以把image_features拿出来的话打通反向传播了" / "你可以试一下all_image_features=torch.cat(gathered_image_features)");
Lightning-AI/pytorch-lightning#4725 ("The default all_gather in pytorch breaks the gradient graph as it does not
propagate any gradient backwards").
Fix: put the local features back into the gathered list before `torch.cat` (`gi[rank] = img; gt[rank] = txt`).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.7156/5.2707/5.3958 (= 1.374/1.267/1.297 ln(B): only the logit scale gets a gradient, the
scaled random similarities sit above chance); fixed 0.1740/0.1684/0.1784 (= 0.042/0.041/0.043 ln(B)). One seed < 2 s.
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import os, tempfile
import torch
import torch.distributed as dist
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("OFA-Sys/Chinese-CLIP#54", "Lightning-AI/pytorch-lightning#4725")
CAUSE = "no_gradient_path"
FAMILY = "distributed"
BATCH = 64


def gather_features(img, txt, fixed):
    world, rank = dist.get_world_size(), dist.get_rank()
    gi = [torch.zeros_like(img) for _ in range(world)]
    gt = [torch.zeros_like(txt) for _ in range(world)]
    dist.all_gather(gi, img)
    dist.all_gather(gt, txt)
    if fixed:
        gi[rank], gt[rank] = img, txt  # the fix: the local shard keeps its autograd history
    return torch.cat(gi), torch.cat(gt)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    own_group = not dist.is_initialized()
    if own_group:
        store = os.path.join(tempfile.mkdtemp(), "pg")
        dist.init_process_group("gloo", init_method="file://" + store, rank=0, world_size=1)
    try:
        tokens, texts = token_pairs(1024, seed=seed)
        model = ResamplerAligner()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        world = dist.get_world_size()
        with watch(model, opt, batch_size=BATCH) as w:
            for step in range(steps):
                idx = torch.randint(0, len(tokens), (BATCH,))
                img, txt = model(tokens[idx], texts[idx])
                all_img, all_txt = gather_features(img, txt, fixed)
                scale = model.logit_scale.exp()
                logits = scale * all_img @ all_txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt}, logits=logits,
                          batch_size=BATCH, candidates=BATCH * world, extras={"logit_scale": scale})
                opt.step()
    finally:
        if own_group:
            dist.destroy_process_group()
            if os.path.exists(store):
                os.unlink(store)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
