"""What a generated image teaches: its training target, and the loss against a soft target.

The field's label handlings for generated images, all as a target distribution over the training identities:

- `onehot`: its source person, like a real image (no smoothing);
- `smooth`: label smoothing with epsilon EPS (CamStyle; EPS 0.1 is what real images get);
- `uniform`: LSRO (Zheng et al. 2017): the uniform distribution, so the image regularises without naming anyone;
- `teacher`: DG-Net's soft labels: the flip-averaged softmax of a re-ID model trained on the real images alone.

The loss is the cross-entropy to the target, `soft_cross_entropy`; in your own training, compute a target row per
generated image once (e.g. `teacher_targets` over the manifest) and use the same loss.
"""

from __future__ import annotations

import torch

LABELS = ("onehot", "smooth", "uniform", "teacher")


def targets(kind: str, pids: torch.Tensor, num_classes: int, eps: float = 0.1,
            teacher: torch.Tensor | None = None) -> torch.Tensor:
    """(B, num_classes) target distributions for B images of `kind` with source labels `pids`; `teacher`: their
    rows of the teacher's probabilities (kind "teacher" only)."""
    if kind == "teacher":
        if teacher is None:
            raise ValueError("teacher targets need the teacher's probabilities")
        return teacher.float() / teacher.float().sum(1, keepdim=True)
    if kind == "uniform":
        return torch.full((len(pids), num_classes), 1.0 / num_classes)
    if kind not in ("onehot", "smooth"):
        raise ValueError(f"label kind {kind!r}: one of {', '.join(LABELS)}")
    eps = 0.0 if kind == "onehot" else eps
    return torch.nn.functional.one_hot(pids, num_classes).float() * (1 - eps) + eps / num_classes


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image cross-entropy of `logits` to the target distributions (float32 whatever the logits' dtype)."""
    return -(target * torch.log_softmax(logits.float(), 1)).sum(1)
