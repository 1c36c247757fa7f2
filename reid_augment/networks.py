"""VDG: the two-stage View-Disentangled Generator and its conditional discriminator.

Paper names: G_rec = VDG.rec (PG2's G1), G_ref = VDG.ref (G2), D = Discriminator.

Shapes: N batch, K = 18 joints, H x W crop. Images in [-1, 1]; pose heatmaps in [0, 1]. No I/O here.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class ResBlock(nn.Module):
    """Two 3x3 conv-ReLU with an identity shortcut (PG2); [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """A stem conv, then one residual block per level with a stride-2 conv between levels.

    [N, C_in, H, W] -> one feature map per level, level i: [N, widths[i], H / 2^i, W / 2^i].
    """

    def __init__(self, in_channels: int, widths: list[int]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(ResBlock(w) for w in widths)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU(inplace=True))
            for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            features.append(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        return features


class Decoder(nn.Module):
    """U-Net decoder: at each level, concatenate the skip, a residual block, then upsample and 1x1 conv.

    [N, bottom_channels, h, w] plus the skips of `Encoder` -> [N, out_channels, H, W]. `skip_widths` are the
    channels of each level's skip (the image branch's, or more when other maps are joined to it).
    """

    def __init__(self, skip_widths: list[int], bottom_channels: int, out_channels: int = 3,
                 widths: list[int] | None = None):
        super().__init__()
        widths = widths or skip_widths
        self.blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        channels = bottom_channels
        for level in reversed(range(len(widths))):
            joined = channels + skip_widths[level]
            self.blocks.append(ResBlock(joined))
            if level > 0:
                self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(joined, widths[level - 1], 1), nn.ReLU(inplace=True)))
                channels = widths[level - 1]
        self.out = nn.Conv2d(joined, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(torch.cat([x, skips[-1 - i]], dim=1))
            if i < len(self.ups):
                x = self.ups[i](x)
        return self.out(x)


class DisentangledGenerator(nn.Module):
    """Image branch and pose branch encoded apart, joined at the bottleneck, decoded with image skips.

    With `z_dim`, each branch is squeezed through a fully connected layer (PG2's G1 bottleneck) and
    f = e_a (+) b_b is mapped back to a [widths[0], h, w] map; without it, the two bottom maps are
    concatenated (the refinement stage keeps the spatial detail).

    Departures from the paper, off by default: `pose_skips` joins the pose branch's feature map of each level to
    the image branch's skip; `pose_to_decoder` joins the target pose itself (its heatmaps, area-resized to each
    level) to every skip, so each decoder level sees where the joints go at its own resolution; `deform_skips`
    (Def-GAN's deformable skips) moves each image skip to the target pose by the part flow
    (`keypoints.part_flows`), so the source's texture reaches the decoder where the target's body part is (the
    background stays where it was); the bottleneck is not moved, nor are the weights' shapes changed.

    [N, C_img, H, W], [N, C_pose, H, W] (, flow [N, H, W, 2] with `deform_skips`) -> [N, 3, H, W].
    """

    def __init__(self, image_channels: int, pose_channels: int, widths: list[int],
                 image_size: tuple[int, int], z_dim: int | None, pose_skips: bool = False,
                 pose_to_decoder: bool = False, deform_skips: bool = False):
        super().__init__()
        self.pose_skips, self.pose_to_decoder, self.deform_skips = pose_skips, pose_to_decoder, deform_skips
        self.image_encoder = Encoder(image_channels, widths)
        self.pose_encoder = Encoder(pose_channels, widths)
        scale = 2 ** (len(widths) - 1)
        self.bottom_size = (image_size[0] // scale, image_size[1] // scale)
        bottom_area = self.bottom_size[0] * self.bottom_size[1]
        self.z_dim = z_dim
        if z_dim:
            self.image_fc = nn.Linear(widths[-1] * bottom_area, z_dim)
            self.pose_fc = nn.Linear(widths[-1] * bottom_area, z_dim)
            self.joint_fc = nn.Linear(2 * z_dim, widths[0] * bottom_area)
            bottom_channels = widths[0]
        else:
            bottom_channels = 2 * widths[-1]
        skip_widths = [w * (1 + pose_skips) + (pose_channels if pose_to_decoder else 0) for w in widths]
        self.decoder = Decoder(skip_widths, bottom_channels, widths=widths)

    def forward(self, image_input: torch.Tensor, pose_input: torch.Tensor,
                flow: torch.Tensor | None = None) -> torch.Tensor:
        skips = self.image_encoder(image_input)
        pose_features = self.pose_encoder(pose_input)
        e_a, b_b = skips[-1], pose_features[-1]
        if self.deform_skips:
            if flow is None:
                raise ValueError("deform_skips needs the part flow (keypoints.condition(..., flow=True))")
            skips = [deform(s, flow) for s in skips[:-1]] + [e_a]
        if self.pose_skips:
            skips = [torch.cat([s, p], dim=1) for s, p in zip(skips, pose_features)]
        if self.pose_to_decoder:
            skips = [torch.cat([s, nn.functional.adaptive_avg_pool2d(pose_input, s.shape[-2:])], dim=1)
                     for s in skips]
        if self.z_dim:
            f = torch.cat([self.image_fc(e_a.flatten(1)), self.pose_fc(b_b.flatten(1))], dim=1)
            x = self.joint_fc(f).view(e_a.shape[0], -1, *self.bottom_size)
        else:
            x = torch.cat([e_a, b_b], dim=1)
        return self.decoder(x, skips)


class Discriminator(nn.Module):
    """DCGAN-style conditional discriminator D(I_a, I): [N, 3, H, W] x 2 -> [N] logits. With `pose_channels`, D
    also sees the target heatmaps, D(I_a, I, H_b) (Def-GAN's D is pose-conditioned), so that it can judge the pose."""

    def __init__(self, channels: int, levels: int, image_size: tuple[int, int], pose_channels: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 6 + pose_channels
        for i in range(levels):
            out_ch = channels * 2 ** min(i, 3)
            layers.append(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        area = (image_size[0] >> levels) * (image_size[1] >> levels)
        self.head = nn.Linear(in_ch * area, 1)

    def forward(self, src_img: torch.Tensor, img: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat([src_img, img] if pose is None else [src_img, img, pose.to(img.dtype)], dim=1)
        return self.head(self.features(x).flatten(1)).squeeze(1)


def deform(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] features sampled through the part flow [N, H, W, 2] (grid_sample's (x, y), corners aligned, at
    the image's H x W), which is first carried to h x w: averaged over each feature cell's pixels, then from image
    pixels to feature-map pixels (an identity flow stays an identity at every level). Float32 sampling, the
    features' dtype and memory format back."""
    (big_h, big_w), (h, w) = flow.shape[1:3], features.shape[-2:]
    flow = flow.float()
    if (big_h, big_w) != (h, w):
        big = flow.new_tensor([big_w - 1, big_h - 1])
        pixels = (flow + 1) / 2 * big  # Image pixels.
        pixels = nn.functional.adaptive_avg_pool2d(pixels.permute(0, 3, 1, 2), (h, w)).permute(0, 2, 3, 1)
        stride = flow.new_tensor([big_w / w, big_h / h])
        flow = ((pixels + 0.5) / stride - 0.5) / flow.new_tensor([max(w - 1, 1), max(h - 1, 1)]) * 2 - 1
    warped = nn.functional.grid_sample(features.float(), flow, mode="bilinear", padding_mode="border",
                                       align_corners=True).to(features.dtype)
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        warped = warped.contiguous(memory_format=torch.channels_last)  # The layout the next layers were given.
    return warped


def coarse_image(rec: nn.Module, src_img: torch.Tensor, src_maps: torch.Tensor, tgt_maps: torch.Tensor,
                 flow: torch.Tensor | None = None) -> torch.Tensor:
    """G_rec(I_a, H_a, H_b): [N, 3, H, W], [N, K, H, W] x 2 (, the part flow) -> [N, 3, H, W]. `rec` may be
    DDP-wrapped."""
    return rec(torch.cat([src_img, src_maps], dim=1), tgt_maps, flow)


def refined_image(ref: nn.Module, src_img: torch.Tensor, coarse: torch.Tensor, tgt_maps: torch.Tensor) -> torch.Tensor:
    """I_b = coarse + G_ref(I_a, coarse, H_b) (Eq. 4). `ref` may be DDP-wrapped.

    The sum is taken in float32: under bf16 autocast it would round the image by about half a grey level.
    """
    return coarse.float() + ref(torch.cat([src_img, coarse], dim=1), tgt_maps).float()


def zero_output(generator: DisentangledGenerator) -> None:
    """Zero the generator's last convolution: a residual generator (G_ref, Eq. 4) then starts by adding nothing."""
    with torch.no_grad():
        generator.decoder.out.weight.zero_()
        generator.decoder.out.bias.zero_()


def ref_source(cfg: ModelConfig, src_img: torch.Tensor, flow: torch.Tensor | None) -> torch.Tensor:
    """The source image G_ref sees (`cfg.ref_input`): I_a itself (the paper), or I_a moved per body part to the
    target pose by the part flow, so that real pixels already lie where the target's limbs are."""
    if cfg.ref_input != "warped":
        return src_img
    if flow is None:
        raise ValueError("ref_input 'warped' needs the part flow (keypoints.condition(..., flow=True))")
    return deform(src_img, flow)


class VDG(nn.Module):
    """Reconstruction stage G_rec (coarse image) and refinement stage G_ref (a residual, Eq. 4).

    `refine` is False while G_ref has not trained (a reconstruction-stage checkpoint): the output is then the
    coarse image, not the coarse image plus an untrained residual.
    """

    def __init__(self, cfg: ModelConfig, refine: bool = True):
        super().__init__()
        self.cfg, self.refine = cfg, refine
        k = cfg.num_joints
        options = {"pose_skips": cfg.pose_skips, "pose_to_decoder": cfg.pose_to_decoder}
        self.rec = DisentangledGenerator(3 + k, k, [cfg.base_channels * (i + 1) for i in range(cfg.num_levels)],
                                         cfg.image_size, cfg.z_dim, deform_skips=cfg.deform_skips, **options)
        self.ref = DisentangledGenerator(3 + 3, k, [cfg.ref_channels] * cfg.ref_levels, cfg.image_size, None,
                                         **options)

    def forward(self, src_img: torch.Tensor, src_maps: torch.Tensor, tgt_maps: torch.Tensor,
                flow: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (coarse, refined), both [N, 3, H, W]. `flow`: the part flow, which `cfg.needs_flow` needs."""
        coarse = coarse_image(self.rec, src_img, src_maps, tgt_maps, flow)
        if not self.refine:
            return coarse, coarse.float()
        return coarse, refined_image(self.ref, ref_source(self.cfg, src_img, flow), coarse, tgt_maps)


def warm_start(model: nn.Module, donor: dict[str, torch.Tensor]) -> list[str]:
    """Copy a trained model's weights into `model`, which may be the same design grown by appended input channels.

    A tensor of the same shape is copied; a larger one (e.g. `pose_to_decoder`'s heatmaps appended to every
    decoder level's input) gets the donor's weights in its leading slice and zeros elsewhere, so the grown model
    computes exactly what the donor did until training moves the new weights. Returns the names of grown tensors.

    Raises:
        ValueError: a tensor is missing from the donor or smaller than the donor's.
    """
    grown = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name not in donor:
                raise ValueError(f"{name}: not in the donor's weights")
            old = donor[name].to(tensor.dtype)
            if old.shape == tensor.shape:
                tensor.copy_(old)
                continue
            if old.dim() != tensor.dim() or any(o > n for o, n in zip(old.shape, tensor.shape)):
                raise ValueError(f"{name}: donor shape {tuple(old.shape)} does not fit {tuple(tensor.shape)}")
            tensor.zero_()
            tensor[tuple(slice(0, o) for o in old.shape)] = old
            grown.append(name)
    return grown
