"""The logit scale is stored as a log (open_clip / OpenAI CLIP: `nn.Parameter(torch.ones([]) * np.log(1 / 0.07))`)
but the loss multiplies the cosine similarities by the stored value itself, without `.exp()`: the logits are
scaled by ln(1/0.07) = 2.66 instead of 1/0.07 = 14.3, i.e. a temperature of 0.38 instead of 0.07. With cosines
in [-1, 1] the softmax over the batch can never become confident, so the loss stays far above what the same
model reaches with the exponentiated scale, and the learnable scale grows far too slowly (AdamW moves it about
lr per step) to repair it within the run.
Thread: BAAI-DCAI/M3D#52 ("You are initializing the temperature in the log scale ... Then, you are directly
scaling the similarity values by this log-scale temperature ... Wouldn't it be necessary to exponentiate the
logit_scale"; maintainer: "checking the source code confirms that self.logit_scale.exp() is correct").
Fix: `scale = model.logit_scale.exp()`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 128; final = mean of the last 5 steps): fault final
loss 2.6475/2.6436/2.6356 (= 0.546/0.545/0.543 x ln(B)); fixed 0.1681/0.1512/0.1733 (= 0.035/0.031/0.036 x
ln(B)); ln(B) = 4.8520.
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("BAAI-DCAI/M3D#52",)
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 128


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt_in in loader:
                if step >= steps:
                    break
                img, txt = model(tok, txt_in)
                scale = model.logit_scale.exp() if fixed else model.logit_scale   # stored as log(1/T)
                logits_per_image = scale * img @ txt.t()
                loss = clip_loss(logits_per_image)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                          logits=logits_per_image, batch_size=BATCH, extras={"logit_scale": scale})
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
