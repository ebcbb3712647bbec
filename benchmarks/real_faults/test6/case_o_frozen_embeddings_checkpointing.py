"""Frozen embeddings + reentrant gradient checkpointing: the encoder layers silently get no gradient.
To save memory the user freezes both towers' embedding layers of a CLIPModel (patch + position embeddings,
token + position embeddings: "keep the pretrained lookup tables") and recomputes everything after them in
the backward pass: `torch.utils.checkpoint.checkpoint(body, model, hidden, use_reentrant=True)` per tower
(encoder layers, final layer norm, projection). With the reentrant implementation a checkpointed block
whose inputs do not require grad returns an output that does not require grad either, whatever
parameters it uses ("None of the inputs have requires_grad=True. Gradients will be None"), and the user
silences that warning as noise. Both towers are cut out of the graph: the loss still back-propagates
(through the logit scale, the only trainable tensor left in it), no error is raised, and the embeddings
stay those of the random init, so the loss stalls near chance.
"When freezing the first layers of a model (e.g. including embeddings) *and* using gradient-checkpointing,
**all** gradient calculation will be disabled, i.e. the output will have `requires_grad==False`"
(huggingface/transformers#21381, "fix with use_reentrant=False"); "gradient_checkpointing + frozen first
parameter = Error ... if I simply freeze an embedding layer of a normal model, training breaks"
(huggingface/transformers#23170).
Thread: huggingface/transformers#21381 ("gradient checkpointing disables requires_grad when freezing part
of models (fix with use_reentrant=False)"); huggingface/transformers#23170 ("Gradient Checkpointing Fails
with frozen parameters").
Fix: `use_reentrant=False` in the checkpoint call.
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final
loss 4.7652/4.3819/4.4809 (= 1.146/1.054/1.077 ln(64)); fixed 1.5808/1.5216/1.3262
(= 0.380/0.366/0.319 ln(64)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import warnings
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#21381", "huggingface/transformers#23170")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def vision_body(model, h):
    v = model.vision_model
    h = v.pre_layrnorm(h)
    for layer in v.encoder.layers:
        h = layer(h, None)
    return model.visual_projection(v.post_layernorm(h[:, 0]))


def text_body(model, h, ids):
    t = model.text_model
    n = ids.shape[1]
    causal = torch.full((n, n), float("-inf")).triu(1)[None, None]
    for layer in t.encoder.layers:
        h = layer(h, causal)
    h = t.final_layer_norm(h)
    return model.text_projection(h[torch.arange(len(ids)), ids.argmax(-1)])  # EOS (highest id) token


def encode(model, pixels, ids, reentrant):
    # embeddings are frozen; everything after them is recomputed in backward to save memory
    h_img = model.vision_model.embeddings(pixels)
    h_txt = model.text_model.embeddings(input_ids=ids)
    img = checkpoint(vision_body, model, h_img, use_reentrant=reentrant)
    txt = checkpoint(text_body, model, h_txt, ids, use_reentrant=reentrant)
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    warnings.filterwarnings("ignore", message="None of the inputs have requires_grad=True")
    model = tiny_clip(seed)
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model.vision_model.embeddings.requires_grad_(False)
    model.text_model.embeddings.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    model.train()
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,))
            img, txt = encode(model, pixels[idx], ids[idx], reentrant=not fixed)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
