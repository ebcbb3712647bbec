"""Resuming from a checkpoint by replacing the model object after the optimizer was built: the script
builds the model and its optimizer as for a fresh run, then on `--resume` does `model = torch.load(ckpt)`
(the whole pickled module, as in the public thread), so the optimizer still holds the parameters of the
discarded module. The reloaded model gets gradients every step but no optimizer ever updates it: the loss
stays where the checkpoint left it (here an early checkpoint, at or above chance).
Thread: pytorch/pytorch#2773 ("I have saved my model via `torch.save(cnn4mnist, 'cnn4mnist.pt')`, and load it
by `model = torch.load('cnn4mnist.pt')`. Now I want to keep training it"; the answer: "you simply create a
new optimizer"); euancrabtree/Lipreading-PyTorch#7 (optimizer and model lifetimes across resumes).
Fix: load the weights into the existing module, `model.load_state_dict(torch.load(buf).state_dict())`,
instead of rebinding `model`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.297/5.714/5.830 (= 1.274/1.374/1.402 x ln(64) = 4.159); fixed 0.654/0.676/0.602 (= 0.157/0.163/0.145 x ln(64)).
Ground truth: param_not_in_optimizer.
"""
import io
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#2773", "euancrabtree/Lipreading-PyTorch#7")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    # the checkpoint an earlier (interrupted) run saved with torch.save(model, path)
    buf = io.BytesIO()
    torch.save(PerceiverAligner(), buf)
    buf.seek(0)
    model = PerceiverAligner()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    if fixed:
        model.load_state_dict(torch.load(buf, weights_only=False).state_dict())
    else:
        model = torch.load(buf, weights_only=False)   # a new module: opt still points at the old one
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
