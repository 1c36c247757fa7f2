"""Losses of both stages: L1 (Eq. 2), masked L1 and mask-SSIM (Eq. 7), Eq. 8, and the GAN terms (Eq. 5, 6).

Shapes: N batch, H x W crop. Images in [-1, 1]; masks {0, 1} of shape [N, 1, H, W].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, as scipy's gaussian_filter uses them (truncate = radius / sigma)."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _valid_filter_matrix(length: int, taps: torch.Tensor) -> torch.Tensor:
    """[length - k + 1, length] banded matrix M with (M @ v) = 'valid' correlation of v with the taps."""
    k = len(taps)
    rows = torch.arange(length - k + 1, device=taps.device)[:, None]
    cols = torch.arange(length, device=taps.device)[None, :]
    offset = cols - rows
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, taps[offset.clamp(0, k - 1)], torch.zeros((), dtype=taps.dtype, device=taps.device))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float | torch.Tensor = 2.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image, differentiable and batched.

    Matches `skimage.metrics.structural_similarity(gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, channel_axis=-1, data_range=...)`: a separable Gaussian filter, the
    statistics kept only where the whole window lies inside the image (skimage crops the border),
    the mean over pixels and channels. The filter is two banded matrix products, fast in float64 too
    (grouped float64 convolutions are not).

    Args:
        x, y: [N, C, H, W].
        data_range: a number, or [N] per image.
    Returns:
        [N] SSIM values.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    n = x.shape[0]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y = x.to(dtype), y.to(dtype)
    g = gaussian_window(window, sigma, x.device).to(dtype)
    rows, cols = _valid_filter_matrix(x.shape[2], g), _valid_filter_matrix(x.shape[3], g)
    stack = torch.stack([x, y, x * x, y * y, x * y])  # [5, N, C, H, W]
    mu_x, mu_y, xx, yy, xy = rows @ stack @ cols.T
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    # A number stays a number (a kernel argument): a tensor made from it would be a blocking host copy per call.
    r = data_range.to(x.device, dtype).reshape(-1, 1, 1, 1) if torch.is_tensor(data_range) else float(data_range)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).reshape(n)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean absolute error."""
    return (pred - target).abs().mean()


def mask_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 7, first case: |pred - target| weighted by (1 + M_b): body pixels count twice."""
    return ((pred - target).abs() * (1 + mask)).mean()


def mask_ssim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Eq. 7, second case: 1 - SSIM(pred * (1 + M_b), target * (1 + M_b)).

    Images are moved to [0, 1] and the weight (1 + M_b) / 2 keeps them there, so body pixels are
    kept and background pixels halved, with data_range 1.
    """
    weight = (1 + mask) / 2
    return 1 - ssim((pred + 1) / 2 * weight, (target + 1) / 2 * weight, 1.0, window, sigma).mean()


def image_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """L_img of the refinement stage, one of the paper's four variants (`cfg.ref_loss`).

    Our reading: Eq. 7's masked terms are taken on the final image I_b = coarse + residual (Eq. 4), as the
    loop passes it. The literal reading (the loss on the residual alone) would contradict Eq. 4, which makes
    the refined image, not the residual, the one compared with the target.
    """
    if cfg.ref_loss == "l1":
        return l1(pred, target)
    if cfg.ref_loss == "mask_l1":
        return mask_l1(pred, target, mask)
    structural = mask_ssim_loss(pred, target, mask, cfg.ssim_window, cfg.ssim_sigma)
    if cfg.ref_loss == "mask_ssim":
        return structural
    return cfg.alpha * structural + (1 - cfg.alpha) * mask_l1(pred, target, mask)  # Eq. 8.


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       mismatch_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5 as a minimisation: -log D(I_a, I_b) - log(1 - D(I_a, fake)). With `mismatch_logits` (real targets
    under another pair's pose), GAN-CLS's form (Reed et al. 2016): the two kinds of fake weigh a half each."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if mismatch_logits is None:
        return real + fake
    return real + (fake + F.binary_cross_entropy_with_logits(mismatch_logits, torch.zeros_like(mismatch_logits))) / 2


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The adversarial term of Eq. 6 in its non-saturating form, -log D(I_a, fake).

    The paper writes the minimax form log(1 - D); like PG2 and Goodfellow et al.'s practical advice we use the
    non-saturating one, which gives G a gradient while D still wins easily.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def identity_loss(fake_features: torch.Tensor, real_features: torch.Tensor) -> torch.Tensor:
    """1 - cos(f(refined), f(I_b)), batch mean: a re-ID model's features of the generated image pulled to the real
    target's, so that the person stays findable (a perceptual loss whose network is a re-ID model)."""
    return (1 - F.cosine_similarity(fake_features.float(), real_features.float(), dim=1)).mean()
