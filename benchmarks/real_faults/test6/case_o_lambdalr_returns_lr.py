"""LambdaLR's lambda returns the learning rate instead of a factor. The user writes a linear warm-up as
`LambdaLR(optimizer, lambda step: args.lr * min(1.0, (step + 1) / warmup))`, reading lr_lambda as "the lr
at this step". LambdaLR multiplies the optimizer's initial lr by whatever the lambda returns, so the lr
is args.lr * args.lr: Adam(lr=1e-3) runs at 1e-6 once the warm-up is over (and below that before). Nothing
errors, the printed `args.lr` looks right, and the contrastive loss sits near its starting value for the
whole run.
"The lambda in LambdaLR is supposed to return the factor to multiply with the base learning rate, so it
should not include a multiplication by `args.lr`. This causes the base lr to be multiplied twice (for
example, it produces 0.0001 instead of 0.01" (lhoyer/MIC#60, the maintainer: "Yes, you are right about this",
inherited from SDAT); "I found the LambdaLR scheduler changes the preset learning rate to 1e-6 rather than
my preset ... update_func = lambda epoch: lr" (pytorch/pytorch#78917).
Thread: lhoyer/MIC#60 ("This causes the base lr to be multiplied twice"); pytorch/pytorch#78917 ("LambdaLR
changes the learning rate in an undesired way").
Fix: return the factor only: `lambda step: min(1.0, (step + 1) / warmup)`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final
loss 5.1294/5.6267/5.6141 (= 1.233/1.353/1.350 ln(64)); fixed 0.1960/0.2314/0.2068
(= 0.047/0.056/0.050 ln(64)).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("lhoyer/MIC#60", "pytorch/pytorch#78917")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    lr, warmup = 1e-3, 10  # args.lr, args.warmup_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    if fixed:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr * min(1.0, (s + 1) / warmup))
    with watch(model, optimizer, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            optimizer.step()
            scheduler.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
