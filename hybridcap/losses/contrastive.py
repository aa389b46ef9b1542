"""CLIP-style symmetric contrastive loss in which samples of the same group are all positives.

In CLIP every image in a batch has exactly one matching text. Here many images share a class and
therefore a set of captions, so a batch always contains several texts that describe an image
equally well. Counting those as negatives would push apart embeddings that should be close.
The loss takes a group id per sample: every image-text pair with equal ids is a positive, and
the target distribution of each row spreads uniformly over its positives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


class ClipContrastiveLoss(nn.Module):
    """Symmetric cross-entropy over image-text similarities with a learnable temperature.

    ``logit_scale`` is the log of the inverse temperature. It starts at log(1/0.07), as in CLIP,
    and the forward pass clamps it to at most log(100) so that the logits cannot grow without
    bound. A parameter pushed above the bound gets no gradient while it stays there.
    """

    def __init__(self, initial_logit_scale: float = INITIAL_LOGIT_SCALE, max_logit_scale: float = MAX_LOGIT_SCALE) -> None:
        super().__init__()
        self.max_logit_scale = max_logit_scale
        self.logit_scale = nn.Parameter(torch.tensor(float(initial_logit_scale)))

    def scale(self) -> torch.Tensor:
        """Return the clamped inverse temperature exp(logit_scale)."""
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Return image-to-text logits ``(B, B)`` from unnormalised embeddings ``(B, D)``.

        Both sides are L2-normalised in fp32, so the logits are scaled cosine similarities.
        """
        image_embeddings = F.normalize(image_embeddings.float(), dim=-1)  # (B, D)
        text_embeddings = F.normalize(text_embeddings.float(), dim=-1)  # (B, D)
        return self.scale() * image_embeddings @ text_embeddings.T  # (B, B)

    @staticmethod
    def targets(group_ids: torch.Tensor) -> torch.Tensor:
        """Return soft targets ``(B, B)``: row i is uniform over the samples whose group equals i's.

        The matrix is symmetric, so the same targets serve both directions of the loss.
        """
        positives = (group_ids[:, None] == group_ids[None, :]).float()  # (B, B), diagonal is 1
        return positives / positives.sum(dim=1, keepdim=True)

    def forward(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, group_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss for a batch of matching image and text embeddings.

        Args:
            image_embeddings: ``(B, D)`` image embeddings, not necessarily normalised.
            text_embeddings: ``(B, D)`` embeddings of the text paired with each image.
            group_ids: ``(B,)`` integer ids. Pairs with equal ids are positives.

        Returns:
            ``contrastive`` (the mean of both directions, the value to optimise),
            ``image_to_text`` and ``text_to_image`` (each direction's cross-entropy), and
            ``logit_scale`` (the clamped inverse temperature, detached, for logging).
        """
        logits_per_image = self.logits(image_embeddings, text_embeddings)  # (B, B)
        targets = self.targets(group_ids)  # (B, B)

        # Soft-target cross-entropy: its minimum is the entropy of the targets, not zero, when a
        # row has several positives.
        image_to_text = -(targets * F.log_softmax(logits_per_image, dim=1)).sum(dim=1).mean()
        text_to_image = -(targets * F.log_softmax(logits_per_image.T, dim=1)).sum(dim=1).mean()
        return {
            "contrastive": (image_to_text + text_to_image) / 2,
            "image_to_text": image_to_text,
            "text_to_image": text_to_image,
            "logit_scale": self.scale().detach(),
        }
