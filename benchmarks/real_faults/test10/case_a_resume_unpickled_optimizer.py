"""Resuming from a checkpoint that pickled the whole optimizer object (`torch.save({"model": model.state_dict(),
"optimizer": opt}, path)`): on resume the script rebuilds the model, loads its state dict, and takes the optimizer as
unpickled from the checkpoint. The unpickled optimizer's param_groups hold the *unpickled copies* of the parameters,
not the new model's tensors: backward fills the model's .grad, opt.step() updates the orphan copies, and the resumed
model never changes, its loss staying where the checkpoint left it. pytext#966: "if we directly use unpicked optimizer
from checkpoint, the reference is different than the loaded model paramters ... the correct implementation should be
optimizer = Optimizer(model.parameters()) ... optimizer.load_state_dict(optimizer_state_dict)"; attention-transfer#2:
"only checkpoint and load optimizer.state_dict()".
Thread: facebookresearch/pytext#966 ("the reference is different than the loaded model paramters");
szagoruyko/attention-transfer#2 ("only checkpoint and load optimizer.state_dict()").
Fix: build the optimizer over the resumed model and load the saved one's state_dict into it.
Validated without the tool (seeds 0,1,2; 60 steps after resume; batch 64; final = mean of the last 5 steps): fault final
loss 3.9223/3.5990/3.7200 (= 0.943/0.865/0.895 ln(64)); fixed 0.1966/0.2431/0.1960 (0.047/0.058/0.047 ln(64)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("facebookresearch/pytext#966", "szagoruyko/attention-transfer#2")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64


def _checkpoint_of_interrupted_job(tokens, texts) -> io.BytesIO:
    """The job that was preempted after 3 steps: it saved the model's state dict and the optimizer object itself."""
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(3):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad(); loss.backward(); opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt, "step": 3}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    ckpt = torch.load(_checkpoint_of_interrupted_job(tokens, texts), weights_only=False)
    model = ResamplerAligner()
    model.load_state_dict(ckpt["model"])
    if fixed:   # the fix: an optimizer over this model's parameters, carrying the saved state
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0); opt.load_state_dict(ckpt["optimizer"].state_dict())
    else:
        opt = ckpt["optimizer"]
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(ckpt["step"], ckpt["step"] + steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
