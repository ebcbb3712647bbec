"""A user develops a frozen-backbone aligner in a notebook: one cell defines the model class and right below it
creates `model = ResamplerAligner()` and the optimizer from `model.parameters()`; a later cell, written when the
training loop was added, instantiates the model a second time (`model = ResamplerAligner()`, "fresh weights before
training") just above the loop. The loop, the loss and `backward()` all use the second instance, whose parameters
get gradients every step, but the optimizer holds the FIRST instance's tensors, which never receive a gradient: every
`opt.step()` is a no-op on the model being trained, and the loss stays where the random initialisation put it, at or
above ln(B). The practical-pytorch thread: "i get a different result, loss is big, and loss flow up and down, do not
diminish"; the author: "I realized that I have the model instantiated twice - once directly after the RNN class, and
once before the main `for epoch in ...` loop (below the train function). Try moving the optimizer to below the second
one, so the params aren't reset."
Thread: spro/practical-pytorch#9 ("I have the model instantiated twice ... Try moving the optimizer to below the
second one").
Fix: create the optimizer after the second instantiation, from the parameters of the model that is trained.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
5.319/6.015/4.248 (= 1.53/1.74/1.23 ln(B), ln(32) = 3.466); fixed 0.083/0.112/0.080 (= 0.02/0.03/0.02 ln(B), ln(32) =
3.466).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("spro/practical-pytorch#9",)
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer_schedule"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    # cell 2: the model and its optimizer
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    # cell 5, above the training loop: fresh weights before training
    model = ResamplerAligner()
    if fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
