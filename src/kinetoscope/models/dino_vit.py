"""DINO ViT-S/8 (Caron et al. 2021) as the key-feature extractor of privacy obfuscation (Ilic 2024 §5.3).

The image backbone of the self-supervised DINO release, in the layout of its public checkpoint
``dino_deitsmall8_pretrain.pth`` (``cls_token``, ``pos_embed`` [1, 785, 384], ``patch_embed.proj``,
``blocks.{0..11}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``; no head), so those
weights load without renaming: ``kinetoscope models import --from dino dino_vits8 FILE``.

| part | ViT-S/8 |
|---|---|
| patch embedding | Conv2d 3→384, 8×8, stride 8 (stride 4 for dense keys) |
| tokens | [CLS] + 28×28 patches at 224², learned positions |
| blocks | 12 × (LayerNorm, 6-head attention with qkv bias, LayerNorm, MLP 384→1536→384 GELU) |
| parameters | 21,670,272 |

Keys for matching (Ilic 2024 §5.3; the authors' code: ``dino_vits8``, stride 4, block 11, facet key, no
[CLS], input 224 resized with Lanczos, ImageNet normalisation): the patch-embedding stride is reduced
to 4 (overlapping patches, a 55×55 grid at 224²) and the position embeddings are resampled bicubically
to that grid. :class:`DinoKeyExtractor` wraps this as the ``uint8 frames -> keys [T, h, w, 384]``
callable that :mod:`kinetoscope.synth.privacy` takes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.models.pretrained import IMAGENET

CHECKPOINT_NAME = "dino_deitsmall8_pretrain.pth"
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth"


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(batch, tokens, dim))

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The key facet ``[B, N, dim]`` (all heads side by side)."""
        dim = x.shape[-1]
        return self.qkv(x)[..., dim:2 * dim]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int, in_channels: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)


class DinoViT(nn.Module):
    """The DINO ViT backbone (ViT-S/8 by default). ``forward`` gives the [CLS] feature ``[B, dim]``;
    :meth:`keys` the patch keys of one block ``[B, h, w, dim]`` at any patch-embedding ``stride``."""

    def __init__(self, patch: int = 8, dim: int = 384, depth: int = 12, heads: int = 6, image_size: int = 224,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.patch, self.image_size = patch, image_size
        self.patch_embed = PatchEmbed(patch, dim, in_channels)
        self.grid = image_size // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor, stride: int | None = None) -> tuple[torch.Tensor, int, int]:
        """Embedded tokens ``[B, 1 + h·w, dim]`` (positions resampled to the h × w grid) and h, w."""
        stride = stride or self.patch
        proj = self.patch_embed.proj
        patches = F.conv2d(x, proj.weight, proj.bias, stride=stride)
        batch, dim, rows, cols = patches.shape
        pos = self.pos_embed
        if (rows, cols) != (self.grid, self.grid):
            grid = pos[:, 1:].reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        return tokens + pos, rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _, _ = self.tokens(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]

    def keys(self, x: torch.Tensor, stride: int | None = None, layer: int = -1) -> torch.Tensor:
        """Keys of block ``layer`` (default the last) for every patch: ``[B, h, w, dim]``, no [CLS]."""
        layer = layer % len(self.blocks)
        tokens, rows, cols = self.tokens(x, stride)
        for block in self.blocks[:layer]:
            tokens = block(tokens)
        block = self.blocks[layer]
        keys = block.attn.keys(block.norm1(tokens))[:, 1:]
        return keys.reshape(x.shape[0], rows, cols, -1)


def dino_vits8() -> DinoViT:
    """ViT-S/8 as released by DINO: patch 8, width 384, 12 blocks, 6 heads, 224² positions."""
    return DinoViT(patch=8, dim=384, depth=12, heads=6, image_size=224)


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class DinoKeyExtractor:
    """Frames uint8 ``[T, H, W, 3]`` -> DINO keys float32 ``[T, h, w, dim]`` (Ilic 2024 §5.3).

    Each frame is resized to ``input_size``² (Lanczos), normalised with the ImageNet mean/std, and the
    keys of block ``layer`` are taken at patch-embedding ``stride``. ``extractor_id`` names the variant
    and a digest of the weights, so templates from other weights are refused."""

    def __init__(self, model: DinoViT, *, input_size: int = 224, stride: int = 4, layer: int = -1,
                 batch_size: int = 4, name: str = "dino_vits8") -> None:
        self.model = model.eval()
        self.input_size, self.stride, self.layer, self.batch_size = input_size, stride, layer, batch_size
        self.extractor_id = (f"{name}/stride{stride}/block{layer % len(model.blocks)}/key/{input_size}"
                             f"/{_weights_digest(model)}")

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        import cv2

        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
            raise ValueError(f"frames must be uint8 [T, H, W, 1|3], got {frames.dtype} {frames.shape}")
        size = (self.input_size, self.input_size)
        resized = np.stack([cv2.resize(np.ascontiguousarray(f), size, interpolation=cv2.INTER_LANCZOS4)
                            .reshape(*size, frames.shape[-1]) for f in frames])
        if resized.shape[-1] == 1:
            resized = np.repeat(resized, 3, axis=-1)
        x = torch.from_numpy(resized).float().div_(255).permute(0, 3, 1, 2)
        mean = torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = self.preprocess(frames)
        out = [self.model.keys(x[i:i + self.batch_size], self.stride, self.layer)
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy().astype(np.float32)


def load_dino_vits8(weights: str | Path) -> DinoViT:
    """ViT-S/8 with weights from a ``.safetensors`` file written by ``kinetoscope models import --from
    dino dino_vits8``; a missing file is an error saying where to get the checkpoint."""
    from kinetoscope.models.weights import load_safetensors

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(
            f"DINO weights {weights} do not exist. Download {CHECKPOINT_NAME} from {CHECKPOINT_URL} "
            f"(facebookresearch/dino), then run `kinetoscope models import --from dino dino_vits8 "
            f"{CHECKPOINT_NAME} --out {weights}`")
    return load_safetensors(dino_vits8(), weights).eval()


EXTRACTORS = ("dino", "colour")


def make_key_extractor(name: str = "dino", weights: str | Path | None = None, stride: int = 4):
    """The key extractor ``name``: ``dino`` (DINO ViT-S/8 keys at patch-embedding ``stride``; ``weights`` =
    the imported ``.safetensors``) or ``colour`` (:class:`kinetoscope.synth.privacy.ColourKeyExtractor`, a
    stand-in for trying the pipeline without the DINO weights)."""
    if name == "dino":
        if weights is None:
            raise ValueError(f"the dino extractor needs --weights: the .safetensors imported from {CHECKPOINT_NAME} "
                             f"({CHECKPOINT_URL}) with `kinetoscope models import --from dino dino_vits8 FILE`")
        return DinoKeyExtractor(load_dino_vits8(weights), stride=stride)
    if name == "colour":
        from kinetoscope.synth.privacy import ColourKeyExtractor

        return ColourKeyExtractor()
    raise ValueError(f"unknown key extractor {name!r}; accepted: {', '.join(EXTRACTORS)}")


__all__ = ["CHECKPOINT_NAME", "CHECKPOINT_URL", "EXTRACTORS", "DinoKeyExtractor", "DinoViT", "dino_vits8",
           "load_dino_vits8", "make_key_extractor"]
