"""Resuming into a fresh model with an optimizer that still holds the old model's parameters. A notebook
trains `net` for a first short session and saves {model, optimizer, epoch}; to resume, the user follows
the "saving and loading a general checkpoint" recipe: `model = Net()`, `optimizer = optim.Adam(net.parameters(),
...)`, `model.load_state_dict(...)`, `optimizer.load_state_dict(...)`, then trains `model`. The optimizer's
param groups point at `net`'s tensors, so `model` gets gradients every step but no optimizer ever applies
them: the resumed run's loss sits where the checkpoint left it while its gradients are perfectly healthy.
The recipe itself had the mix-up: "Now, we have loaded parameters of checkpoint for model, but optimizer
loaded parameters of net which is saved into checkpoint. I think optimizer should be loaded parameters of
model rather than net" / "I think: optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9) but now:
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)" (pytorch/tutorials#1430).
Thread: pytorch/tutorials#1430 ("optimizer loaded parameters of net ... I think optimizer should be loaded
parameters of model rather than net").
Fix: build the resumed optimizer on the resumed model: `torch.optim.Adam(model.parameters(), lr=1e-3)`.
Validated without the tool (seeds 0,1,2; 8 unwatched steps before the checkpoint, then 80 watched steps;
batch 64; final = mean of the last 5 steps): fault final loss 2.4314/2.3464/2.2092 (= 0.585/0.564/0.531 ln(64)); fixed 0.1671/0.1518/0.1619
(= 0.040/0.037/0.039 ln(64)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import io
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/tutorials#1430",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64


def batches(tokens, texts, n):
    for _ in range(n):
        idx = torch.randint(0, len(tokens), (BATCH,))
        yield tokens[idx], texts[idx]


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    # first session (earlier cells of the notebook): a few steps, then a checkpoint
    net = ResamplerAligner()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for tok, txt in batches(tokens, texts, 8):
        img_e, txt_e = net(tok, txt)
        loss = clip_loss(net.logit_scale.exp() * img_e @ txt_e.t())
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    buf = io.BytesIO()
    torch.save({"epoch": 1, "model_state_dict": net.state_dict(),
                "optimizer_state_dict": optimizer.state_dict()}, buf)
    buf.seek(0)

    # resume
    model = ResamplerAligner()
    optimizer = torch.optim.Adam((model if fixed else net).parameters(), lr=1e-3)
    checkpoint = torch.load(buf)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    model.train()
    with watch(model, optimizer, batch_size=BATCH) as w:
        for step, (tok, txt) in enumerate(batches(tokens, texts, steps)):
            img_e, txt_e = model(tok, txt)
            logits = model.logit_scale.exp() * img_e @ txt_e.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img_e, "text": txt_e}, logits=logits)
            optimizer.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
