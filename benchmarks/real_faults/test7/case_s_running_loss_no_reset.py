"""The loss a user reports is a windowed running mean for the progress bar: `running_loss += loss.item()` each step
and `running_loss / (steps since the last reset)` shown and handed to the logger, with `running_loss = 0` meant to
happen after every LOG_EVERY steps. GPT2-Chinese#70 is exactly this bookkeeping gone wrong ("running_loss的计算以及
清空方式或存在重大Bug?": where running_loss is accumulated and where it is cleared; "打不打印日志本身不应该影响代码的
训练逻辑" the logging should not change training), and autrainer#125 the same class of logging-only mistake in the
average's divisor ("It only concerns logging and not actual training, but this carries out to everything that is
logged: the metrics csv, plots, ..."). Here the reset was lost in a refactor: the divisor still restarts every
LOG_EVERY steps but the sum never does, so the logged "clip loss" grows with the number of steps taken, while the
loss that is actually backpropagated falls normally. The run learns; its logged curve says it diverges.
Thread: Morizeyao/GPT2-Chinese#70 ("running_loss的计算以及清空方式或存在重大Bug?"); autrainer/autrainer#125 ("It only
concerns logging and not actual training").
Fix: `running_loss = 0.0` after each LOG_EVERY-th step (the reset the window average assumes).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 logged steps): fault final logged
loss 9.8283/7.1412/8.5376 (= 2.363/1.717/2.053 ln(64), ln(64) = 4.1589); fixed 0.1417/0.1406/0.1536
(0.034/0.034/0.037 ln(64)).
Ground truth: logging_misstates_loss.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Morizeyao/GPT2-Chinese#70", "autrainer/autrainer#125")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 64
LOG_EVERY = 10


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=0)
    model = ResamplerAligner(latents=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    running_loss = 0.0
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            running_loss += loss.item()
            shown = running_loss / (step % LOG_EVERY + 1)      # mean over the current window
            w.observe(step, losses={"clip": torch.tensor(shown)}, embeddings={"image": img, "text": txt},
                      logits=logits, batch_size=BATCH)
            if step % LOG_EVERY == LOG_EVERY - 1:
                if __name__ == "__main__":
                    print(f"step {step + 1}: clip {shown:.4f}")
                if fixed:
                    running_loss = 0.0
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
