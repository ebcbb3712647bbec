"""A user follows a popular from-scratch CLIP tutorial: image and text projection heads, logits = text @ image.T /
temperature, and "soft" targets built from the model's own similarities, `targets = softmax((image @ image.T + text @
text.T) / 2 * temperature)`, with the cross-entropy taken against those targets in both directions. The targets are
not the matching pairs: they are whatever the current embeddings say is similar, so the loss is as happy when all
embeddings agree as when they separate the pairs. The model drifts to alike embeddings, the targets turn uniform, and the
loss settles at ln(B) with no pair structure learned. The issues: "the soft targets is wrong. The model will converge
to make all vectors similar"; "They use an identity matrix as the targets (if you want to think in terms of a one-hot
matrix)". The repository's fix (PR #28): "swap to id-driven targets".
Thread: moein-shariatnia/OpenAI-CLIP#27 ("the soft targets is wrong, do not use the soft targets");
moein-shariatnia/OpenAI-CLIP#16 ("They use an identity matrix as the targets").
Fix: hard targets, each image's own caption (the identity matrix, i.e. `torch.arange(B)` as class indices), as
the repository's fix does.
Validated without the tool (seeds 0,1,2; 120 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.488/3.488/3.487 (= 1.01/1.01/1.01 ln(B), ln(32) = 3.466); fixed 0.181/0.204/0.219 (= 0.05/0.06/0.06 ln(B), ln(32) = 3.466).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs

THREADS = ("moein-shariatnia/OpenAI-CLIP#27", "moein-shariatnia/OpenAI-CLIP#16")
CAUSE = "wrong_targets"
FAMILY = "loss_function"
BATCH = 32


class ProjectionHead(nn.Module):
    """The tutorial's head: linear -> GELU -> linear, residual, dropout, LayerNorm."""

    def __init__(self, dim_in, dim_out=E):
        super().__init__()
        self.projection = nn.Linear(dim_in, dim_out)
        self.fc = nn.Linear(dim_out, dim_out)
        self.layer_norm = nn.LayerNorm(dim_out)

    def forward(self, x):
        projected = self.projection(x)
        x = self.fc(F.gelu(projected)) + projected
        return self.layer_norm(x)


class CLIPModel(nn.Module):
    def __init__(self, temperature=1.0):
        super().__init__()
        self.image_projection = ProjectionHead(D)
        self.text_projection = ProjectionHead(DT)
        self.temperature = temperature

    def forward(self, tokens, texts):
        image_embeddings = F.normalize(self.image_projection(tokens.mean(1)), dim=-1)
        text_embeddings = F.normalize(self.text_projection(texts), dim=-1)
        return image_embeddings, text_embeddings


def cross_entropy(preds, targets):
    return (-targets * F.log_softmax(preds, dim=-1)).sum(1)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = CLIPModel(temperature=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = (txt @ img.t()) / model.temperature
            if fixed:
                targets = torch.eye(BATCH)
            else:
                images_similarity = img @ img.t()
                texts_similarity = txt @ txt.t()
                targets = F.softmax((images_similarity + texts_similarity) / 2 * model.temperature, dim=-1)
            texts_loss = cross_entropy(logits, targets)
            images_loss = cross_entropy(logits.t(), targets.t())
            loss = ((images_loss + texts_loss) / 2.0).mean()
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits.t(),
                      batch_size=BATCH, inputs=tokens[idx], targets=targets.argmax(-1))
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
