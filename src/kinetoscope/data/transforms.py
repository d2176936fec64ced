"""Clip augmentations, drawn once per clip and applied identically to every frame.

Broomé 2022 §3.2: "horizontal flipping, random cropping and shading by adding Gaussian noise. The
transformations are consistent across a given sequence". Feichtenhofer 2017 Ch. 3: crop width and height
jittered (here: random resized crop), the same crop and flip for all chunks and for the flow; a
horizontal flip negates the horizontal flow component u. Ilic 2024 §4.4: contrast/hue/brightness
jitter, whole-video flip.

Every transform takes and returns ``(video, flow)``: ``video`` ``[C, T, H, W]``, float in [0, 1] or
the cache's uint8 (geometric transforms keep uint8, which resizes several times faster; photometric
ones return float; :func:`to_float` finishes the conversion),
``flow`` float ``[2|3, T, H, W]`` (u, v[, magnitude]) or ``None``; randomness comes from the
``torch.Generator`` passed in, so a seeded generator reproduces the clip bit for bit. Geometric
transforms move the flow with the frames and rescale its vectors; photometric ones leave it alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kinetoscope.data.video import output_size

Tensor = torch.Tensor
Pair = tuple[Tensor, Tensor | None]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def to_float(video: Tensor) -> Tensor:
    """uint8 0–255 -> float32 [0, 1]; float input is returned as it is."""
    return video.float().div_(255.0) if video.dtype == torch.uint8 else video


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``[C, T, H, W]`` -> ``[C, T, h, w]`` (bilinear, antialiased, frames as a batch). uint8 frames are
    resized as uint8 in channels-last layout, PyTorch's fastest path (about 4x the float one)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    frames = x.permute(1, 0, 2, 3)
    if x.dtype == torch.uint8:
        frames = frames.contiguous(memory_format=torch.channels_last)
    y = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.permute(1, 0, 2, 3).contiguous()


def _crop_resize_flow(flow: Tensor, top: int, left: int, h: int, w: int, size: tuple[int, int]) -> Tensor:
    flow = _resize(flow[:, :, top : top + h, left : left + w], size).clone()
    sx, sy = size[1] / w, size[0] / h
    flow[0] *= sx
    flow[1] *= sy
    if flow.shape[0] == 3:
        flow[2] = torch.sqrt(flow[0] ** 2 + flow[1] ** 2)
    return flow


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        for t in self.transforms:
            video, flow = t(video, flow, generator)
        return video, flow

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class Resize:
    """Resize every frame: ``int`` = shorter side, ``(h, w)`` = exact."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = size

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        h, w = video.shape[-2:]
        size = output_size(h, w, self.size)  # the rule ``data prepare`` resizes by
        video = _resize(video, size)
        if flow is not None:
            flow = _crop_resize_flow(flow, 0, 0, h, w, size)
        return video, flow


class ResizeCover:
    """Resize (aspect kept) to the smallest size that covers ``(h, w)``; pair with :class:`CenterCrop`."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        h, w = video.shape[-2:]
        s = max(self.size[0] / h, self.size[1] / w)
        size = (max(self.size[0], round(h * s)), max(self.size[1], round(w * s)))
        video_out = _resize(video, size)
        if flow is not None:
            flow = _crop_resize_flow(flow, 0, 0, h, w, size)
        return video_out, flow


class CenterCrop:
    """The central ``(h, w)`` (or ``size × size``) region of every frame."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        h, w = video.shape[-2:]
        ch, cw = self.size
        if ch > h or cw > w:
            raise ValueError(f"centre crop {self.size} is larger than the frames {(h, w)}; resize first")
        top, left = (h - ch) // 2, (w - cw) // 2
        video = video[..., top : top + ch, left : left + cw]
        if flow is not None:
            flow = flow[..., top : top + ch, left : left + cw]
        return video, flow


class RandomResizedCrop:
    """One random crop of area fraction ``scale`` and aspect ``ratio``, resized to ``size``, for the
    whole clip (Broomé 2022 §3.2 "the same crop is applied for the whole sequence")."""

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.ratio = scale, ratio

    def params(self, h: int, w: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        area = h * w
        for _ in range(10):
            target = area * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), generator))
            cw = round(math.sqrt(target * aspect))
            ch = round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=generator))
                left = int(torch.randint(0, w - cw + 1, (), generator=generator))
                return top, left, ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        top, left, ch, cw = self.params(video.shape[-2], video.shape[-1], generator)
        video = _resize(video[..., top : top + ch, left : left + cw], self.size)
        if flow is not None:
            flow = _crop_resize_flow(flow, top, left, ch, cw, self.size)
        return video, flow


class RandomHorizontalFlip:
    """Mirror the clip with probability ``p``; the flow is mirrored and its u component negated
    (Feichtenhofer 2017 Ch. 3)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        if float(torch.rand((), generator=generator)) >= self.p:
            return video, flow
        video = video.flip(-1)
        if flow is not None:
            flow = flow.flip(-1).clone()
            flow[0] = -flow[0]
        return video, flow


def _grey(video: Tensor) -> Tensor:
    if video.shape[0] == 1:
        return video
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=video.dtype).view(3, 1, 1, 1)
    return (video * weights).sum(0, keepdim=True)


class ColorJitter:
    """Brightness, contrast, saturation factors in ``[1 − x, 1 + x]`` and a hue rotation in
    ``[−hue, hue]`` turns (YIQ rotation), one draw per clip, applied in that order. Saturation and hue
    need RGB. Every step is affine in the pixel values, so the four are composed into one colour
    matrix and offset and applied in a single pass (then clamped to [0, 1]). With ``then_normalize=
    (mean, std)`` the standardisation that follows is folded into the same pass (and the clamp bounds),
    which equals :class:`Normalize` after the jitter."""

    def __init__(
        self,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.0,
        *,
        then_normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.then_normalize = then_normalize

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        unit = 1.0 / 255.0 if video.dtype == torch.uint8 else 1.0  # folded into the matrix: one pass less
        video = video.float() if video.dtype == torch.uint8 else video
        c = video.shape[0]
        matrix = torch.eye(c, dtype=torch.float64) * unit
        offset = torch.zeros(c, dtype=torch.float64)
        if self.brightness:  # v * b
            matrix *= _uniform(1 - self.brightness, 1 + self.brightness, generator)
        if self.contrast:  # (v - m) * k + m, m = the clip's mean grey level after brightness
            k = _uniform(1 - self.contrast, 1 + self.contrast, generator)
            means = video.mean(dim=(1, 2, 3)).double()
            grey_mean = float(_GREY[:c] @ (matrix @ means + offset)) if c == 3 else float(matrix[0, 0] * means[0])
            matrix, offset = matrix * k, offset * k + (1 - k) * grey_mean
        if c == 3 and self.saturation:  # (v - g) * s + g, g = the pixel's grey level
            s = _uniform(1 - self.saturation, 1 + self.saturation, generator)
            blend = s * torch.eye(3, dtype=torch.float64) + (1 - s) * _GREY[None, :].expand(3, 3)
            matrix, offset = blend @ matrix, blend @ offset
        if c == 3 and self.hue:
            angle = 2 * math.pi * _uniform(-self.hue, self.hue, generator)
            cos, sin = math.cos(angle), math.sin(angle)
            rot = torch.tensor([[1.0, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=torch.float64)
            rotate = torch.linalg.inv(_YIQ) @ rot @ _YIQ
            matrix, offset = rotate @ matrix, rotate @ offset
        low, high = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
        if self.then_normalize is not None:  # (clamp(M v + o) - mean) / std == clamp(M' v + o', low', high')
            mean, std = (torch.as_tensor(x, dtype=torch.float64) for x in self.then_normalize)
            matrix, offset = matrix / std[:, None], (offset - mean) / std
            low, high = -mean / std, (1 - mean) / std
        flat = video.reshape(c, -1)
        out = torch.addmm(offset.to(video.dtype)[:, None], matrix.to(video.dtype), flat)
        return out.clamp_(low.to(video.dtype)[:, None], high.to(video.dtype)[:, None]).view_as(video), flow


_GREY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)


class GaussianShading:
    """Add one Gaussian noise field ``N(0, std²)`` of shape ``[C, 1, H, W]`` to every frame (Broomé 2022
    §3.2 "shading by adding Gaussian noise", consistent across the sequence), with probability ``p``."""

    def __init__(self, std: float = 0.05, p: float = 0.5) -> None:
        self.std, self.p = std, p

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        if float(torch.rand((), generator=generator)) >= self.p:
            return video, flow
        video = to_float(video)
        c, _, h, w = video.shape
        noise = torch.randn((c, 1, h, w), generator=generator, dtype=video.dtype) * self.std
        return (video + noise).clamp(0.0, 1.0), flow


#: Per-channel RGB statistics of the common pretraining recipes, for ``data.normalize``.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # ImageNet (every 2D backbone; torchvision's image models)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Kinetics-400 as torchvision's video ResNets (r3d_18, mc3_18, r2plus1d_18) were trained
    "kinetics": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
}


class Normalize:
    """``(video − mean) / std`` per channel (e.g. the UCF101 statistics of Ilic 2024, or a pretrained
    backbone's recipe, :data:`NORMALIZATIONS`)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1, 1)

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        video = to_float(video)
        scale = (1.0 / self.std).to(video.dtype)
        return torch.addcmul((-self.mean * (1.0 / self.std)).to(video.dtype), video, scale), flow  # one pass


class FlowMinMax:
    """Each flow frame scaled linearly to [0, 1] over all its channels, in steps of 1/255 (Broomé 2022
    §3.3: flow frames were stored min-max scaled as 0–255 images, then divided by 255); equal to
    ``flow.encode.unit_range(flow.encode.minmax_uint8(flow))``. A constant frame becomes 0."""

    def __call__(
        self, video: Tensor, flow: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Pair:
        if flow is None:
            return video, flow
        low = flow.amin(dim=(0, 2, 3), keepdim=True)
        span = flow.amax(dim=(0, 2, 3), keepdim=True) - low
        scaled = torch.where(span > 0, (flow - low) / torch.where(span > 0, span, 1.0), 0.0)
        return video, torch.round(scaled * 255.0).clamp_(0, 255) / 255.0
