"""The user resumes training from a general checkpoint the way the PyTorch tutorial shows: a new model is
built and loaded from the checkpoint, but the optimizer is built from `net.parameters()`, the instance of the
job that wrote the checkpoint. The resumed model gets gradients every step, while the optimizer steps the
other instance's tensors, so the model never changes and the loss stays flat at the checkpoint's level.

Thread: pytorch/tutorials#1430 ("we have loaded parameters of checkpoint for model, but optimizer loaded parameters of net")
Fix: optimizer = torch.optim.Adam(model.parameters(), lr=1e-3).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss 3.536/3.217/3.243 (= 0.850/0.773/0.780 ln(B)); fixed 0.209/0.233/0.219 (= 0.050/0.056/0.053 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from common import token_pairs, ResamplerAligner, clip_loss

THREADS = ("pytorch/tutorials#1430",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint and resume"
BATCH = 64


def first_job(net, tokens, texts, steps: int = 4) -> io.BytesIO:
    """The earlier job: a few steps, then preempted; it leaves a general checkpoint behind."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(tokens), (BATCH,))
        img, txt = net(tokens[idx], texts[idx])
        loss = clip_loss(net.logit_scale.exp() * img @ txt.t())
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    buf = io.BytesIO()
    torch.save({"epoch": 0, "model_state_dict": net.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": loss.item()}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    net = ResamplerAligner()
    path = first_job(net, tokens, texts)

    # resume
    model = ResamplerAligner()
    optimizer = torch.optim.Adam((model if fixed else net).parameters(), lr=1e-3)
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    model.train()

    with watch(model, optimizer, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            optimizer.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
