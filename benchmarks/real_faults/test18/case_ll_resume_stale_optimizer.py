"""A preempted image->text alignment job is resumed from its last checkpoint (written at step 0; the job died
before the next save). The resume path builds the model and its AdamW as on a fresh start, then calls a
`load_checkpoint` helper that returns a *new* model instance with the saved weights, and loads the saved
optimizer state into the optimizer built before. That optimizer still holds the parameter list of the first
instance, which no forward pass uses any more: the resumed model gets its gradients every step and is never
updated, `optimizer.step()` moves nothing, and the loss stays where the checkpoint left it (at its start,
above ln(B)) for the whole resumed run.
Thread: kitzeslab/opensoundscape#351 ("that list is somehow out of date in that it corresponds to the old
object, not the current one"); the same trap in a contrastive trainer's resume: huggingface/sentence-transformers#2648
("resume_from_checkpoint would not work because the loss model was still the original, untrained model").
Fix: build the optimizer from the resumed model's parameters, then load its saved state.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final
loss 4.4489/4.6782/4.9186 (= 1.284/1.350/1.419 ln(B), ln(32) = 3.4657); fixed 0.1066/0.0716/0.1057
(= 0.031/0.021/0.031 ln(B)).
Ground truth: param_not_in_optimizer.
"""
import io
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import token_pairs, ResamplerAligner, clip_loss

THREADS = ("kitzeslab/opensoundscape#351", "huggingface/sentence-transformers#2648")
CAUSE = "param_not_in_optimizer"
FAMILY = "resume"
BATCH = 32
LR = 1e-3
SAVE_EVERY = 50
PREEMPTED_AT = 30


def build_model_and_optimizer():
    model = ResamplerAligner(latents=16, depth=1)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    return model, opt


def save_checkpoint(model, opt, step):
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, buf)
    buf.seek(0)
    return buf


def load_checkpoint(buf):
    ckpt = torch.load(buf)
    model = ResamplerAligner(latents=16, depth=1)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    g = torch.Generator().manual_seed(seed)

    # the first job: checkpoints every SAVE_EVERY steps, preempted at step PREEMPTED_AT
    model, opt = build_model_and_optimizer()
    last = None
    for step in range(PREEMPTED_AT):
        if step % SAVE_EVERY == 0:
            last = save_checkpoint(model, opt, step)
        idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        opt.zero_grad()
        loss.backward()
        opt.step()

    # the resumed job: same script with --resume
    model, opt = build_model_and_optimizer()
    model, ckpt = load_checkpoint(last)
    if fixed:
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    opt.load_state_dict(ckpt["optimizer"])
    start = ckpt["step"]
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(start, start + steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
