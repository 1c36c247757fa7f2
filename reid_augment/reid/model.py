"""A torchreid model as the rest of the package uses it: built by name, saved with what it needs to be read back
(architecture, identities, input size), loaded without running code, and asked for features and identity
probabilities of a batch of images (flip-averaged, as DG-Net's teacher does).

One machinery serves the teacher's soft labels, the identity gate (`reid_augment.reid.gate`) and a user's own
checkpoint (`reid-benchmark`'s arm checkpoints carry everything; a plain torchreid state dict needs --reid-arch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from . import fastdata


def torchreid():
    try:
        import torchreid.reid as tr
    except ImportError:  # A source install of deep-person-reid.
        import torchreid as tr
    return tr


def model_names() -> list[str]:
    return sorted(torchreid().models.__model_factory)


def check_name(arch: str) -> None:
    """An unknown torchreid model name is a one-line error listing close names."""
    names = model_names()
    if arch not in names:
        import difflib

        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (one of {', '.join(names[:8])}, ...)"
        raise InputError(f"--model {arch!r}: not a torchreid model{hint}")


def build(arch: str, num_classes: int, pretrained: bool = False, use_gpu: bool = False) -> torch.nn.Module:
    """torchreid's model `arch` (`check_name` first)."""
    check_name(arch)
    return torchreid().models.build_model(arch, num_classes=num_classes, loss="softmax", pretrained=pretrained,
                                          use_gpu=use_gpu)


@dataclass
class ReidModel:
    net: torch.nn.Module
    arch: str
    classes: list[str]          # The person id of each output class, in order.
    size: tuple[int, int]       # (H, W) it was trained at.

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 128, channels_last: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, probabilities) of uint8 (N, 3, H, W) images, each the mean over the image and its mirror."""
        self.net.eval()
        dev = next(self.net.parameters()).device
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            part = images[start:start + batch_size]
            f = p = 0
            for mirrored in (False, True):
                x = fastdata.batch(part, torch.arange(len(part)), torch.full((len(part),), mirrored),
                                   channels_last=channels_last).to(dev)
                v = self.net(x).float()
                f = f + v / 2
                p = p + torch.softmax(self.net.classifier(v).float(), 1) / 2
            feats.append(f.cpu())
            probs.append(p.cpu())
        empty = torch.empty(0)
        return (torch.cat(feats) if feats else empty), (torch.cat(probs) if probs else empty)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable features of generator-range images ([N, 3, H, W] in [-1, 1]) at the model's input size:
        the frozen model as a perceptual network (`losses.identity_loss`)."""
        self.net.eval().requires_grad_(False)
        x = (images + 1) / 2
        if tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.net((x - fastdata.MEAN.to(x)) / fastdata.STD.to(x))


def checkpoint_record(net: torch.nn.Module, arch: str, classes: list[str], size: tuple[int, int]) -> dict:
    """What a re-ID checkpoint holds so that `load` can rebuild it alone."""
    return {"model": net.state_dict(), "arch": arch, "classes": list(classes), "size": list(size)}


def load(path: str | os.PathLike, arch: str | None = None, classes: list[str] | None = None,
         size: tuple[int, int] | None = None, device: str | torch.device = "cpu") -> ReidModel:
    """A re-ID model from a `reid-benchmark` arm checkpoint (self-describing), or from a torchreid checkpoint
    (`state_dict`) with `arch` and, for the class order, `classes` (default: the caller's training identities).

    Raises:
        InputError: not loadable, another architecture, or another number of identities than `classes`.
    """
    from ..checkpoints import safe_load

    path = Path(path)
    state = safe_load(path, what="re-ID checkpoint")
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a re-ID checkpoint (a {type(state).__name__}, not a dict of tensors)")
    weights = state.get("model", state.get("state_dict", state))
    weights = {k.removeprefix("module."): v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    arch = state.get("arch", arch)
    if arch is None:
        raise InputError(f"{path}: does not say its architecture; give it with --reid-arch (e.g. osnet_x0_25)")
    head = weights.get("classifier.weight")
    if head is None:
        raise InputError(f"{path}: has no classifier (classifier.weight): not a torchreid softmax model")
    saved = state.get("classes")
    if saved is not None and classes is not None and list(saved) != list(classes):
        raise InputError(f"{path}: trained on {len(saved)} identities that are not this data set's {len(classes)} "
                         f"training identities")
    classes = list(saved if saved is not None else classes if classes is not None
                   else [str(i) for i in range(head.shape[0])])  # Features only: the class order does not matter.
    if len(classes) != head.shape[0]:
        raise InputError(f"{path}: a classifier of {head.shape[0]} identities, but the data set's training split "
                         f"has {len(classes)}")
    net = build(arch, head.shape[0])
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing:
        raise InputError(f"{path}: does not fit torchreid's {arch} ({len(missing)} missing tensors, e.g. "
                         f"{missing[0]})")
    size = tuple(state.get("size", size or (256, 128)))
    return ReidModel(net.to(device).eval(), arch, classes, (int(size[0]), int(size[1])))


def source_scores(probs: torch.Tensor, source_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the probability of its source identity, and its margin over the most probable other one."""
    rows = torch.arange(len(probs))
    src = torch.as_tensor(source_class, dtype=torch.long)
    own = probs[rows, src]
    others = probs.clone()
    others[rows, src] = -1
    return own.numpy(), (own - others.max(1).values).numpy()
