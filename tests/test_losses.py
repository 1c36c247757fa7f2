import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from reid_augment.config import LossConfig
from reid_augment.images import load_rgb
from reid_augment.losses import image_loss, mask_l1, mask_ssim_loss, ssim


def test_ssim_matches_skimage_on_real_images(cuhk_dir):
    paths = sorted(cuhk_dir.glob("*.jpg"))[:6]
    a = np.stack([load_rgb(p) for p in paths[:3]]).astype(np.float64)
    b = np.stack([load_rgb(p) for p in paths[3:]]).astype(np.float64)
    to_t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)  # noqa: E731
    ranges = torch.tensor([x.max() - x.min() for x in a])
    ours = ssim(to_t(a), to_t(b), data_range=ranges).numpy()
    for i in range(3):
        ref = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    channel_axis=-1, data_range=float(ranges[i]))
        assert ours[i] == pytest.approx(ref, abs=1e-4)


def test_ssim_of_identical_images_is_one_and_differentiable():
    x = (torch.rand(2, 3, 32, 16) * 2 - 1).requires_grad_()
    torch.testing.assert_close(ssim(x, x.detach()), torch.ones(2), rtol=0, atol=1e-6)
    y = torch.rand(2, 3, 32, 16) * 2 - 1
    ssim(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_masked_losses_weigh_background_half():
    target = torch.zeros(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    inside, outside = target.clone(), target.clone()
    inside[..., 2, 2] = 1.0
    outside[..., 12, 2] = 1.0
    assert mask_l1(inside, target, mask) == pytest.approx(2 * mask_l1(outside, target, mask).item())
    # mask-SSIM: the same error costs more on the body than on the background.
    noise = torch.rand(1, 3, 16, 16) * 0.5
    on_body, on_bg = target.clone(), target.clone()
    on_body[..., :8, :] += noise[..., :8, :]
    on_bg[..., 8:, :] += noise[..., :8, :]
    assert mask_ssim_loss(on_body, target, mask) > mask_ssim_loss(on_bg, target, mask)
    assert mask_ssim_loss(target, target, mask) == pytest.approx(0.0, abs=1e-6)


def test_weighted_loss_is_eq8():
    pred, target = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    mask = (torch.rand(2, 1, 32, 16) > 0.5).float()
    cfg = LossConfig(ref_loss="weighted", alpha=0.7)
    expected = 0.7 * mask_ssim_loss(pred, target, mask) + 0.3 * mask_l1(pred, target, mask)
    torch.testing.assert_close(image_loss(pred, target, mask, cfg), expected)
    assert image_loss(pred, target, mask, LossConfig(ref_loss="l1")) == pytest.approx((pred - target).abs().mean().item())


def test_the_mismatch_term_weighs_the_two_kinds_of_fake_a_half_each():
    from reid_augment.losses import discriminator_loss

    real, fake, mismatch = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0]), torch.tensor([1.0, 0.0])
    softplus = torch.nn.functional.softplus  # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x).
    expected = softplus(-real).mean() + (softplus(fake).mean() + softplus(mismatch).mean()) / 2
    torch.testing.assert_close(discriminator_loss(real, fake, mismatch), expected)
    torch.testing.assert_close(discriminator_loss(real, fake), softplus(-real).mean() + softplus(fake).mean())


def test_the_identity_term_is_zero_for_equal_features_and_two_for_opposite_ones():
    from reid_augment.losses import identity_loss

    f = torch.randn(3, 16)
    torch.testing.assert_close(identity_loss(f, 2 * f), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(identity_loss(f, -f), torch.tensor(2.0))
