"""The config schema of the seed's YAML files: one dataclass per section (`vision_encoder`,
`text_encoder`, `model`, `losses`, `dataset`, `optimization`). Every field carries a short comment;
fields the seed states are marked "seed", the others are documented defaults. Loading and validation
are in `reference_models.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

LatentInit = Literal["seed", "randn", "normal", "trunc_normal", "xavier", "zeros"]
PoolingType = Literal["simple"]
PerceiverPool = Literal["mean", "attention"]
DataSource = Literal["synthetic", "features", "images"]
Schedule = Literal["cosine", "constant", "linear"]
MrlLogMode = Literal["seed", "mean"]


@dataclass
class VisionEncoderConfig:
    name: str = "openai/clip-vit-large-patch14-336"  # seed: frozen CLIP ViT-L/14-336 backbone
    hidden_dim: int = 1024  # seed: width of the backbone's patch tokens (B, 577, 1024)
    num_tokens: int = 577  # seed: 1 CLS + 24x24 patches at 336px / 14
    freeze: bool = True  # seed: the backbone is frozen; only what follows trains
    use_perceiver: bool = False  # seed: true for perceiver_mrl_alignment, false for pixmo
    perceiver_num_latents: int = 64  # seed
    perceiver_latent_dim: int = 1024  # seed
    perceiver_num_layers: int = 4  # seed
    perceiver_num_heads: int = 8  # not in seed: Flamingo's resampler uses 8 heads
    perceiver_mlp_ratio: int = 4  # not in seed: the usual transformer MLP width
    # seed encoders/perceiver.py:155-156: randn then normal_(std=0.02); the last init wins
    perceiver_latent_init: LatentInit = "seed"
    perceiver_latent_init_std: float = 0.02  # std used by "seed", "normal", "trunc_normal"
    perceiver_pooling: PerceiverPool = "mean"  # seed: a plain mean over the latents; "attention" = fix 4
    use_attention_pooling: bool = True  # seed: direct model pools tokens with a learned scorer
    pooling_type: PoolingType = "simple"  # seed: linear scorer, softmax over tokens, weighted sum
    attention_pool_dropout: float = 0.0  # seed fix 4 uses dropout=0.1 in SimpleAttentionPooling
    pooling_softmax_dim: int = 1  # softmax axis of the pooling scores (B, T): 1 = tokens (correct)
    # fault-injection switch (default = healthy): true runs the first projector under torch.no_grad,
    # so its weights never receive a gradient (the "accidentally frozen projector" bug)
    projector_no_grad: bool = False


@dataclass
class TextEncoderConfig:
    name: str = "openai/clip-vit-large-patch14-336"  # seed: differs between the two configs
    hidden_dim: int = 768  # pooled output width of the frozen text encoder (CLIP-L text, mpnet: 768)
    freeze: bool = True  # frozen; only the projection trains
    pooling: Literal["pooler", "mean"] = "pooler"  # how a real encoder is pooled (images source)
    # fault-injection switch (default = healthy): true detaches the projected text features, cutting
    # the gradient path from the loss to the text projection
    detach_projection: bool = False


@dataclass
class ModelConfig:
    projection_dim: int = 4096  # seed diagrams: (B, 4096) joint embedding
    # fault-injection switch (default = healthy): false skips the L2 normalisation of both
    # embeddings, so the contrastive logits see raw, unbounded dot products
    l2_normalize: bool = True


@dataclass
class LossConfig:
    contrastive: float = 0.25  # seed: CLIP InfoNCE weight
    mrl: float = 1.0  # seed: Matryoshka weight
    mrl_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048, 4096])
    sample_single_mrl_dim: bool = True  # seed: one nested dim sampled per batch
    temperature_init: float = 0.07  # open_clip: logit_scale = ln(1/0.07)
    max_logit_scale: float = 100.0  # open_clip clamps exp(logit_scale) at 100
    learnable_temperature: bool = True
    # "seed": loss_mrl logged as the sum over the dims evaluated this step (one dim when sampling);
    # "mean": mean over evaluated dims, with the sampled dim logged beside it
    mrl_log_mode: MrlLogMode = "seed"
    # under torchrun (open_clip's names, see reference_models/distributed.py): all-gather features across
    # ranks (B*W candidates per row), make the gather differentiable, score only this rank's rows
    gather_features: bool = False
    gather_with_grad: bool = False
    local_loss: bool = False


@dataclass
class SyntheticConfig:
    """Knobs of the CLIP-like synthetic source; see reference_models/data.py for their origin."""

    concept_dim: int = 64  # latent concepts shared by an image and its caption
    shared_scale: float = 2.0  # norm of the component common to all images/tokens, / content norm
    high_norm_frac: float = 0.02  # share of patch tokens that are high-norm "register" tokens
    high_norm_scale: float = 10.0  # their norm relative to a typical token
    # global (CLS-like) content of the high-norm tokens: 1.0 = the image's global content scaled with the
    # token, the same content share as a typical token's; 0.0 = content-free (a constant direction)
    high_norm_content: float = 1.0
    content_frac: float = 0.25  # share of an image's concepts each patch token carries
    position_scale: float = 0.5  # positional component (same for all images), / content norm
    token_noise: float = 0.5  # per-token isotropic noise, / content norm
    text_noise: float = 0.3  # caption noise in concept space, / concept norm
    text_shared_scale: float = 1.0  # text anisotropy: common text direction, / text content norm


@dataclass
class FeaturesConfig:
    path: str = ""  # .safetensors / .pt (weights_only) / .npz with image_tokens (N,T,D), text (N,Dt)
    val_fraction: float = 0.2  # held-out share when the file has no val_* tensors


@dataclass
class ImagesConfig:
    root: str = ""  # image folder; caption rows name images relative to it
    captions: str = ""  # CSV (header: image, caption) or JSON lines {"image", "caption"}
    vision_model: str = "random"  # local CLIPVisionModel directory, or "random" (tiny, random weights)
    text_model: str = "random"  # local CLIPTextModel / transformers encoder directory, or "random"
    vision_layer: int = -2  # hidden layer whose patch tokens are used (LLaVA: penultimate)
    keep_cls: bool = True  # keep the CLS token in front of the patch tokens (seed: 577 = 1 + 576)
    encode_batch_size: int = 16  # images encoded per batch (only one batch is in memory)
    cache_dir: str = ""  # where encoded features are cached (default: <root>/.diagnose-cache)


@dataclass
class DatasetConfig:
    source: DataSource = "synthetic"
    batch_size: int = 128  # seed: 64 (perceiver), 128 (direct)
    num_train: int = 8192  # synthetic samples in the train split
    num_val: int = 1024  # held-out retrieval split: chance R@1 = 1/num_val
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    # fault-injection switch (default = healthy): true pairs each training image with the caption of
    # another sample (a fixed seeded permutation): misaligned pairs; the held-out split stays paired
    shuffle_captions: bool = False


@dataclass
class OptimizationConfig:
    lr: float = 2e-4  # seed: 2e-3 (perceiver), 2e-4 (direct)
    weight_decay: float = 0.05  # not in seed: open_clip's default for projection training
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # open_clip CLIP betas
    eps: float = 1e-6  # open_clip
    schedule: Schedule = "cosine"  # not in seed: cosine decay after linear warm-up
    warmup_steps: int = 0  # not in seed: 0 keeps a 150-step diagnostic run at the configured lr
    epochs: int = 10  # seed: 10 epochs
    grad_clip: float = 0.0  # 0 = off (the seed does not mention clipping)
    # With Adam the change a step makes to a layer's output grows with its fan-in, so a model shrunk
    # k-fold in width needs k x the lr on its weight matrices to see the same dynamics (muP, Yang et
    # al. 2022, Tensor Programs V). When true, --scale small|tiny multiply matrix_lr_multiplier by k.
    # Vectors (biases, norm gains, latents, temperature) keep the configured lr.
    scale_transfers_lr: bool = True
    matrix_lr_multiplier: float = 1.0  # lr multiplier for weight matrices (Linear weights)


@dataclass
class AlignmentConfig:
    name: str = "alignment"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    vision_encoder: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    scale: str = "full"  # set by apply_scale; recorded in every run
    source: str = ""  # set by load_config: the alias or path this config was loaded from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ALIASES = {
    "perceiver": "perceiver_mrl_alignment.yaml",
    "direct": "pixmo_alignment.yaml",
}
