"""BERT habit on a CLIP text tower. The user builds a transformers CLIPModel (tiny config, trained from scratch) and,
as they would with BERT's [CLS], takes the text embedding from the first position: `last_hidden_state[:, 0]`. Their
tokenizer starts every caption with a BOS token. CLIP's text transformer is causally masked, so the first position
attends only to itself: its hidden state is the same vector for every caption, all text embeddings are identical, each
image row of the logit matrix is constant and the loss is exactly ln(B) with no gradient that could separate the
captions. The pooled output (`pooler_output`, the EOS position, which has seen the whole caption) is what CLIP uses.
The threads: lucidrains/MaMMUT-pytorch#1 ("you can actually use a causally masked text encoder for contrastive
purposes if you pick out the eos token. Openai clip does this.") and mlfoundations/open_clip#549 ("current
implementation ... produces cls_mask for [CLS] being as the first token. But in CoCa, [CLS] is the end token").
Thread: lucidrains/MaMMUT-pytorch#1 ("if you pick out the eos token. Openai clip does this");
mlfoundations/open_clip#549.
Fix: `t = out.pooler_output` (the EOS position) instead of `out.last_hidden_state[:, 0]`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.159/4.159/4.159 (= 1.000/1.000/1.000 ln(64), exactly chance); fixed 1.312/1.319/0.934 (= 0.316/0.317/0.225 ln(64)).
Ground truth: embedding_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("lucidrains/MaMMUT-pytorch#1", "mlfoundations/open_clip#549")
CAUSE = "embedding_collapse"
FAMILY = "architecture"
BATCH = 64
BOS = 0


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(2048, seed)
    ids[:, 0] = BOS  # the tokenizer opens every caption with BOS
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=g)
            img = model.visual_projection(model.vision_model(pixel_values=pixels[idx]).pooler_output)
            out = model.text_model(input_ids=ids[idx])
            t = out.pooler_output if fixed else out.last_hidden_state[:, 0]  # "CLS" pooling
            txt = model.text_projection(t)
            img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
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
