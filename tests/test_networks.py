import dataclasses

import pytest
import torch

from reid_augment.config import ModelConfig, load_recipe
from reid_augment.keypoints import condition
from reid_augment.networks import (VDG, Discriminator, coarse_image, deform, ref_source, refined_image, warm_start,
                                    zero_output)


@pytest.mark.parametrize("recipe, size", [("market1501", (128, 64)), ("deepfashion", (256, 256))])
def test_paper_networks_output_shapes(recipe, size):
    cfg = load_recipe(recipe).model
    assert cfg.image_size == size
    model, disc = VDG(cfg), Discriminator(cfg.disc_channels, cfg.disc_levels, cfg.image_size)
    src, maps = torch.rand(1, 3, *size) * 2 - 1, torch.rand(1, 18, *size)
    with torch.no_grad():
        coarse, refined = model(src, maps, maps)
        logits = disc(src, refined)
    assert coarse.shape == refined.shape == (1, 3, *size)
    assert logits.shape == (1,)
    assert len(model.rec.image_encoder.blocks) == {"market1501": 5, "deepfashion": 6}[recipe]


def _tiny():
    return ModelConfig(image_size=(32, 16), num_levels=3, base_channels=8, z_dim=8, ref_levels=3, ref_channels=8,
                       disc_channels=8, disc_levels=3)


def test_refined_is_coarse_plus_residual():
    torch.manual_seed(0)
    model = VDG(_tiny())
    src, src_maps, tgt_maps = torch.rand(2, 3, 32, 16), torch.rand(2, 18, 32, 16), torch.rand(2, 18, 32, 16)
    coarse, refined = model(src, src_maps, tgt_maps)
    residual = model.ref(torch.cat([src, coarse], 1), tgt_maps)
    torch.testing.assert_close(refined, coarse + residual)
    torch.testing.assert_close(coarse, coarse_image(model.rec, src, src_maps, tgt_maps))
    torch.testing.assert_close(refined, refined_image(model.ref, src, coarse, tgt_maps))


def test_gradients_reach_both_encoders_of_both_stages():
    torch.manual_seed(0)
    model = VDG(_tiny())
    coarse, refined = model(torch.rand(2, 3, 32, 16), torch.rand(2, 18, 32, 16), torch.rand(2, 18, 32, 16))
    (coarse.sum() + refined.sum()).backward()
    for stage in (model.rec, model.ref):
        for encoder in (stage.image_encoder, stage.pose_encoder):
            grad = encoder.stem[0].weight.grad
            assert grad is not None and grad.abs().sum() > 0


def test_pose_branch_changes_the_output():
    torch.manual_seed(0)
    model = VDG(_tiny()).eval()
    src, maps = torch.rand(1, 3, 32, 16), torch.rand(1, 18, 32, 16)
    with torch.no_grad():
        a = model(src, maps, maps)[1]
        b = model(src, maps, torch.zeros_like(maps))[1]
    assert not torch.allclose(a, b)


def test_warm_start_grows_a_model_that_computes_what_its_donor_did():
    cfg = load_recipe("tiny").model
    torch.manual_seed(0)
    donor = VDG(cfg).eval()
    grown = VDG(dataclasses.replace(cfg, pose_to_decoder=True)).eval()
    names = warm_start(grown.rec, donor.rec.state_dict()) + warm_start(grown.ref, donor.ref.state_dict())
    assert names and all(n.startswith("decoder.") for n in names)  # Only the decoder's inputs grew.
    h, w = cfg.image_size
    img, src, tgt = torch.randn(2, 3, h, w), torch.rand(2, 18, h, w), torch.rand(2, 18, h, w)
    with torch.no_grad():
        for a, b in zip(donor(img, src, tgt), grown(img, src, tgt)):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not fit"):  # A smaller model cannot take a larger one's weights.
        warm_start(donor.rec, grown.rec.state_dict())


def _identity_flow(n, h, w):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs / (w - 1) * 2 - 1, ys / (h - 1) * 2 - 1], -1).float().expand(n, h, w, 2)


def test_deform_carries_the_flow_to_every_level():
    flow = _identity_flow(1, 32, 16)
    shifted = flow.clone()
    shifted[..., 0] -= 4 / 15 * 2  # Every image pixel samples 4 px to its left.
    for stride in (1, 2, 4):
        columns = torch.arange(16 // stride).float().expand(1, 2, 32 // stride, 16 // stride)
        torch.testing.assert_close(deform(columns, flow), columns, atol=1e-4, rtol=0)  # Identity at every level.
        out = deform(columns, shifted)[0, 0, 5]
        expected = (torch.arange(16 // stride) - 4 / stride).clamp(min=0)  # Border padding on the left edge.
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_deformable_skips_move_the_skips_and_keep_the_weights():
    torch.manual_seed(0)
    plain = VDG(_tiny(), refine=False)
    warped = VDG(dataclasses.replace(_tiny(), deform_skips=True), refine=False)
    warped.load_state_dict(plain.state_dict())  # The same weights: the flow is the only difference.
    src, maps = torch.rand(2, 3, 32, 16), torch.rand(2, 18, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(warped(src, maps, maps, _identity_flow(2, 32, 16))[0], plain(src, maps, maps)[0],
                                   atol=1e-4, rtol=0)
        pose = torch.tensor([[8.0, 8], [10, 8], [10, 5], [16, 4], [20, 4], [10, 11], [16, 12], [20, 12], [20, 6],
                             [25, 6], [30, 6], [20, 10], [25, 10], [30, 10], [7, 7], [7, 9], [7, 6], [7, 10]])
        moved = (pose + torch.tensor([0.0, 3.0]))[None].expand(2, -1, -1)
        flow = condition(pose[None].expand(2, -1, -1), moved, (32, 16), flow=True)["flow"]
        assert not torch.allclose(warped(src, maps, maps, flow)[0], plain(src, maps, maps)[0], atol=1e-3)
    with pytest.raises(ValueError, match="part flow"):
        warped(src, maps, maps)


def test_a_zeroed_refiner_returns_the_coarse_image_and_still_learns():
    torch.manual_seed(0)
    model = VDG(_tiny())
    zero_output(model.ref)
    src, maps = torch.rand(2, 3, 32, 16) * 2 - 1, torch.rand(2, 18, 32, 16)
    coarse, refined = model(src, maps, maps)
    torch.testing.assert_close(refined, coarse.float())
    (refined - src).abs().mean().backward()  # The last convolution's weights get a gradient: it can move.
    assert model.ref.decoder.out.weight.grad.abs().sum() > 0


def test_the_warped_source_moves_the_refiners_input_only():
    torch.manual_seed(0)
    plain = VDG(_tiny())
    warped = VDG(dataclasses.replace(_tiny(), ref_input="warped"))
    warped.load_state_dict(plain.state_dict())  # The same weights: the refiner's source is the only difference.
    assert warped.cfg.needs_flow and not plain.cfg.needs_flow
    src, maps = torch.rand(2, 3, 32, 16) * 2 - 1, torch.rand(2, 18, 32, 16)
    shifted = _identity_flow(2, 32, 16).clone()
    shifted[..., 0] -= 4 / 15 * 2
    torch.testing.assert_close(ref_source(warped.cfg, src, shifted)[..., 4:], src[..., :-4], atol=1e-4, rtol=0)
    assert ref_source(plain.cfg, src, shifted) is src
    with torch.no_grad():
        same = warped(src, maps, maps, _identity_flow(2, 32, 16))
        torch.testing.assert_close(same[1], plain(src, maps, maps)[1], atol=1e-4, rtol=0)
        moved = warped(src, maps, maps, shifted)
        torch.testing.assert_close(moved[0], same[0])  # G_rec never sees the flow ...
        assert not torch.allclose(moved[1], same[1], atol=1e-3)  # ... G_ref does.
    with pytest.raises(ValueError, match="part flow"):
        warped(src, maps, maps)
