"""A user's Hugging Face `Trainer` script with our callback, unmodified under `diagnose ablate --`: a tiny
`CLIPModel` built from a config (random weights, no download) on CPU, seeded through transformers'
`set_seed` and `TrainingArguments.seed`; the data come from a generator of their own (the same pairs on
every seed). `--logit-scale 0` starts the scale at exp(0) = 1 (transformers issue 13430's situation)."""

import argparse
import tempfile

import torch
from transformers import CLIPConfig, CLIPModel, Trainer, TrainingArguments, set_seed

from diagnose.integrations.hf import DiagnoseTrainerCallback

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--steps", type=int, default=40)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--logit-scale", type=float, default=2.6592)
args = p.parse_args()

N, B, K = 256, 16, 32  # pairs, batch, concepts
g = torch.Generator().manual_seed(0)
patterns, tokens = torch.randn(K, 3, 16, 16, generator=g), torch.randint(3, 64, (K, 6), generator=g)


def pairs(n):
    concept = torch.randint(0, K, (n,), generator=g)
    return patterns[concept] + 0.3 * torch.randn(n, 3, 16, 16, generator=g), tokens[concept]


pixels, words = pairs(N)
data = [{"pixel_values": pixels[i], "input_ids": words[i]} for i in range(N)]
held_out = pairs(64)


def retrieval(model):  # held-out R@1/5/10, measured once at on_train_end
    out = model(pixel_values=held_out[0], input_ids=held_out[1])
    return out.image_embeds, out.text_embeds


def collate(items):
    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "input_ids": torch.stack([i["input_ids"] for i in items]), "return_loss": True}


set_seed(args.seed)
model = CLIPModel(CLIPConfig(
    text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=8),
    vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=16, patch_size=8),
    projection_dim=16, logit_scale_init_value=args.logit_scale))
targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="hf-trainer-"), per_device_train_batch_size=B,
                          max_steps=args.steps, learning_rate=args.lr, seed=args.seed, report_to=[],
                          save_strategy="no", logging_strategy="no", remove_unused_columns=False, use_cpu=True,
                          disable_tqdm=True, dataloader_drop_last=True)
trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate,
                  callbacks=[DiagnoseTrainerCallback(out=None, alarm="off", expensive_every=5,
                                                     retrieval_fn=retrieval)])
trainer.train()
print(f"trained {trainer.state.global_step} steps")
