"""A hand-written L2 normalisation without a dim: the user writes `x / x.norm()` for both towers, which
divides by the norm of the whole (B, E) matrix, the PyTorch twin of tf.math.l2_normalize called without axis. Each
row then has norm about 1/sqrt(B) instead of 1, so the cosine logits are ~B times too small and the learnable
logit_scale (14.3 at init, Adam steps of ~1e-3 on its log) cannot make up the factor: the softmax stays nearly
uniform and the loss sits just under ln(B). The TF thread: "Default axis is None, so the normalization will be over
batch as well as embedding dim. We want only norm for embedding vec (ie. axis=-1)" ... "SimCLR training failed with
loss stuck at an unreasonably high level even with 1 batch of data"; the SupContrast thread: "remember to l2 norm your
output before passing to SupConLoss".
Thread: tensorflow/similarity#237 ("Default axis is None, so the normalization will be over batch as well as
embedding dim"); HobbitLong/SupContrast#22 ("remember to l2 norm your output before passing to SupConLoss").
Fix: `x / x.norm(dim=-1, keepdim=True)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
3.9357/3.9334/3.9351 (= 0.946 ln(64) on each seed); fixed 0.1687/0.1632/0.1735 (0.041/0.039/0.042 ln(64)).
Ground truth: not_normalised.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, token_pairs, clip_loss

THREADS = ("tensorflow/similarity#237", "HobbitLong/SupContrast#22")
CAUSE = "not_normalised"
FAMILY = "normalisation_temperature"
BATCH = 64


def l2norm(x: torch.Tensor, fixed: bool) -> torch.Tensor:
    if fixed:
        return x / x.norm(dim=-1, keepdim=True)
    return x / x.norm()          # the bug: no dim, the norm of the whole (B, E) matrix


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img = l2norm(model.encode_image(tokens[idx]), fixed)
            txt = l2norm(model.text(texts[idx]), fixed)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
