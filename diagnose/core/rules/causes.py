"""Root causes a finding can implicate, in the order that breaks ties between equally ranked causes
(more specific mechanisms first). Rules name these ids in their `Emit` declarations; the ranking in
`diagnose.core.rules.ranking` reads those declarations and this table, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    id: str
    title: str  # what is wrong, in one line
    fix: str  # the change that tests it


CAUSES: tuple[Cause, ...] = (
    Cause("nonfinite_divergence", "training diverged to NaN/Inf",
          "lower the lr, clip gradients, look for log(0) or x/0"),
    # before no_gradient_path: a module whose output is the same for every sample (a [CLS] query attending over
    # the batch's identical [CLS] tokens) passes no gradient to what feeds it, so mixing can produce dead
    # gradients upstream; a missing gradient path cannot make samples depend on each other
    Cause("pooling_axis", "a softmax or attention runs over the batch axis: samples are mixed",
          "pass the token axis to the softmax (dim=-1); nn.MultiheadAttention(..., batch_first=True) for (B, T, D)"),
    Cause("no_gradient_path", "part of the model gets no gradient",
          "find the detach()/no_grad/frozen path between these parameters and the loss"),
    Cause("param_not_in_optimizer", "trainable parameters get gradients but are in no optimizer param group",
          "build the optimizer from model.parameters() after every module exists (or add_param_group)"),
    Cause("wrong_targets", "the targets do not point at the matching pairs",
          "use torch.arange(B) over the logits' rows as the targets"),
    Cause("symmetric_latents", "the latents/queries are copies of each other",
          "initialise latents randomly (e.g. normal std 0.02), not a constant"),
    Cause("logging_misstates_loss", "the logged losses misstate the objective",
          "log each component from the tensor that enters the total"),
    Cause("replicas_out_of_sync", "the ranks' model replicas hold different parameters",
          "find the rank-dependent update (modules outside DDP, no_sync, a per-rank parameter change)"),
    Cause("distributed_gradient_missing",
          "a local loss over features gathered without gradient drops the cross-rank gradient terms",
          "set gather_with_grad together with local_loss (open_clip)"),
    Cause("distributed_gradient_scale", "gathered features give a gradient scaled by the world size",
          "gather with gradient for a non-local loss (open_clip gather_with_grad), or average rather than sum across "
          "ranks"),
    Cause("chance_miscounted", "the configured batch is not the number of candidates each row is scored against",
          "state candidates = batch x world when features are gathered across ranks"),
    Cause("false_negatives", "duplicates inside a batch are scored as negatives",
          "deduplicate captions per batch, or mask duplicates of the positive out of the negatives"),
    Cause("too_few_negatives", "too few contrastive negatives per row",
          "raise the batch or gather features across ranks"),
    Cause("not_normalised", "embeddings enter the logits without L2 normalisation",
          "F.normalize both embeddings before the similarity"),
    Cause("weight_decay_collapse", "weight decay shrinks the weights faster than the gradients grow them",
          "lower weight_decay (AdamW shrinks by lr x wd per step)"),
    Cause("lr_schedule", "the lr schedule takes the learning rate away before the model learned",
          "check the scheduler's total steps (steps vs epochs) and that it steps once per optimizer step"),
    Cause("learning_rate_too_low", "the learning rate is too low for the weights to move",
          "raise the lr (check units, schedule, multipliers)"),
    Cause("learning_rate_too_high", "the learning rate is too high: single steps rewrite the layers",
          "lower the lr 10x or add warm-up"),
    Cause("misaligned_pairs", "images and captions do not match (no shared signal)",
          "check the pairing in the data pipeline"),
    Cause("temperature", "the temperature keeps the softmax from being confident",
          "check the logit-scale init (ln 1/0.07) and its lr"),
    Cause("shared_input_component", "one direction shared by all inputs dominates them",
          "centre the features (subtract the dataset mean)"),
    Cause("embedding_collapse", "the embeddings collapsed to one direction (cause not named by the probes)",
          "ablate the candidate causes one at a time"),
)
BY_ID: dict[str, Cause] = {c.id: c for c in CAUSES}
ORDER: dict[str, int] = {c.id: i for i, c in enumerate(CAUSES)}
UNEXPLAINED = Cause("unexplained", "the run did not learn and no finding names a cause",
                    "run `diagnose ablate` to test candidate causes")
