"""A user trains new projection heads on top of a resampler kept frozen from an earlier stage
(`requires_grad_(False)`, the heads and the logit scale in AdamW). To make sure the frozen part gets no
gradient they wrap the encoding in `with torch.no_grad():`, the way ConVIRT-pytorch wraps its text encoder,
but the block also runs the image projection (inside `encode_image`) and the text head. The heads' outputs
then carry no autograd history: only the logit scale is in the loss's graph, so `backward()` raises no error,
the heads never get a gradient and the loss stays above ln(B) (random embeddings at scale ~13) while the
logit scale slowly drifts down.
Thread: edreisMD/ConVIRT-pytorch#7 ("Text encoder was freeze six layers, and linear wrapped in a 'with
torch.no_grad()' block. loss may not get so low under this setting ... delete with torch.no_grad(), the loss
go down quickly").
Fix: run only the frozen resampler under `torch.no_grad()`; apply the projection and text head outside it.
Validated without the tool (seeds 0,1,2; 100 steps; batch 32; final = mean of the last 5 steps): fault final loss
5.0732/4.6806/4.9494 (= 1.464/1.351/1.428 ln(B), ln(32) = 3.466); fixed 0.2155/0.2069/0.2105 (= 0.062/0.060/0.061
ln(B)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import token_pairs, clip_loss, ResamplerAligner

THREADS = ("edreisMD/ConVIRT-pytorch#7",)
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    model.resampler.requires_grad_(False)           # frozen from stage 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            if fixed:
                with torch.no_grad():
                    lat = model.resampler(tokens[idx].unsqueeze(1))[:, 0]
                img = model.proj(lat.mean(1))
                txt = model.text(texts[idx])
            else:
                with torch.no_grad():               # frozen encoders
                    img = model.encode_image(tokens[idx])
                    txt = model.text(texts[idx])
            img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
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
