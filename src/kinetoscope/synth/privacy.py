"""Motion-consistent privacy obfuscation and its baselines (Ilic 2024 §5.3, Eqs. 5.1–5.5).

Hide *who* is in a video while keeping *what* they do: privacy-salient regions (found by matching
template key vectors against every frame) are replaced by noise that moves like the body.

* **Templates** (§5.3 "Template library"): a template is the key vector of a key-feature extractor at
  one hand-picked patch of a source image (in the thesis the last-layer DINO-ViT key; Fig. 5.3: torso,
  arm, leg, hair, ...). :class:`TemplateLibrary` stores them as key vectors together with the source
  image, the patch and the extractor's id, in one JSON file.
* **Saliency** (Eqs. 5.1–5.2): per frame and patch ``j``,
  ``s_j = (1/|T̃|) Σ_i max(0, cos(K(τ_i), K(I_j)))`` (``combine="mean"``; ``combine="max"`` takes the
  strongest template instead — see docs/deviations.md), reshaped to the patch grid and resized to the
  frame bilinearly.
* **Noise** (Eqs. 5.3–5.4): ``N(p, 1) ~ U[μ−σ, μ+σ]`` independently per pixel and channel, with the
  dataset's per-channel mean ``μ`` and standard deviation ``σ`` in pixel units (drawn as integers);
  then carried along the optical flow with the appearance-free warping rules of Ilic 2024 §4.3
  (nearest neighbour, forward placement, occluded pixels take the value moved onto them, de-occluded
  and border pixels are refilled from ``N(p, 1)``; :func:`kinetoscope.synth.appearance_free.move_noise`).
  ``mode="sequential"`` (default) moves ``N(t-1)`` by the flow between frames ``t-1`` and ``t``, so the
  noise travels with the region; ``mode="first-frame"`` moves ``N(1)`` once, Eq. 5.4 read literally
  (docs/deviations.md).
* **Blend** (Eq. 5.5): ``O = I + S·(N − I)``, i.e. ``lerp(I, N, S)`` in pixel space; where ``S = 0``
  the frame is unchanged bitwise.

Baselines of Table 5.2 (same entry points, ``method=``): ``mask`` (person masks, given as files,
filled with the mean colour under the mask), ``pixelate`` (``block`` × ``block`` average pooling, 4 or
16), ``blur`` (``strength`` weak κ=13, σ=10 or strong κ=21, σ=10 at 224², scaled to the frame size) and
``iid-noise`` (the §5.4 ablation: the same saliency, but noise redrawn independently every frame).

A video shorter than 2 frames has no flow: its one frame is blended with ``N(p, 1)``.

The key extractor is passed in (any callable ``uint8 [T, H, W, 3] -> float32 [T, h, w, D]`` with an
``extractor_id`` attribute), so this module does not import ``models``; the DINO ViT-S/8 extractor
lives in :mod:`kinetoscope.models.dino_vit`, and :class:`ColourKeyExtractor` is a small stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kinetoscope.synth.appearance_free import move_noise

METHODS = ("motion-noise", "iid-noise", "mask", "pixelate", "blur")
NOISE_MODES = ("sequential", "first-frame")
COMBINE = ("mean", "max")
BLUR_STRENGTHS = {"weak": (13, 10.0), "strong": (21, 10.0)}  # kernel κ and σ at 224², Ilic 2024 §5.4
PIXELATE_BLOCKS = (4, 16)
DEFAULT_TEMPLATES = ("torso", "arm", "leg", "hair")  # SBU / KTH selection, Ilic 2024 §5.4


class KeyExtractor(Protocol):
    """Frames ``uint8 [T, H, W, 3]`` -> key features ``float32 [T, h, w, D]`` on a patch grid."""

    extractor_id: str

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------------
# A stand-in extractor


class ColourKeyExtractor:
    """A stand-in key extractor for tests and examples (not a learned feature).

    The key of a ``patch`` × ``patch`` cell is the sign of its mean colour around mid-grey,
    ``sign(mean_c − 127.5)`` per channel, a vector in {−1, 0, 1}^C: patches of the same colour family
    match with cosine 1, complementary colours with −1 (clipped to 0 by Eq. 5.1). Cells are
    non-overlapping; ``H`` and ``W`` need not be multiples of ``patch`` (the last partial cells count).
    """

    def __init__(self, patch: int = 4) -> None:
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.patch = int(patch)
        self.extractor_id = f"colour-sign/patch{self.patch}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        steps, height, width, channels = frames.shape
        rows, cols = -(-height // self.patch), -(-width // self.patch)
        out = np.empty((steps, rows, cols, channels), dtype=np.float32)
        for i in range(rows):
            for j in range(cols):
                cell = frames[:, i * self.patch:(i + 1) * self.patch, j * self.patch:(j + 1) * self.patch]
                out[:, i, j] = np.sign(cell.reshape(steps, -1, channels).mean(1) - 127.5)
        return out


# ---------------------------------------------------------------------------------------------------
# Templates


@dataclass
class Template:
    """One template (Ilic 2024 §5.3): the key ``key`` of extractor ``extractor_id`` at patch ``patch``
    (grid column, row) of ``image`` (pixel ``point`` x, y picked by the user)."""

    name: str
    key: list[float]
    extractor_id: str
    image: str
    point: tuple[int, int]
    patch: tuple[int, int]


class TemplateLibrary:
    """Templates stored as key vectors in one JSON file ``{"templates": [...]}``; writes are atomic."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Template]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            items = data["templates"]
            out = {}
            for item in items:
                item = {**item, "point": tuple(item["point"]), "patch": tuple(item["patch"])}
                out[item["name"]] = Template(**item)
            return out
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"template library {self.path} is not valid: {exc}") from None

    def names(self) -> list[str]:
        return sorted(self.load())

    def add(self, template: Template, overwrite: bool = False) -> None:
        from kinetoscope.utils import atomic_write_json

        templates = self.load()
        if template.name in templates and not overwrite:
            raise FileExistsError(f"template {template.name!r} already exists in {self.path}; pass overwrite")
        templates[template.name] = template
        atomic_write_json(self.path, {"templates": [asdict(t) for t in templates.values()]})

    def select(self, names: Sequence[str], extractor: KeyExtractor | None = None) -> list[Template]:
        """The templates ``names``; an unknown name is an error listing the library. With ``extractor``,
        templates made by another extractor (id or key length differs) are refused."""
        templates = self.load()
        if not names:
            raise ValueError("no templates selected")
        unknown = [n for n in names if n not in templates]
        if unknown:
            listed = ", ".join(sorted(templates)) or "(none: make some with `kinetoscope synth templates`)"
            raise KeyError(f"unknown template(s) {unknown} in {self.path}; available: {listed}")
        chosen = [templates[n] for n in names]
        if extractor is not None:
            for t in chosen:
                if t.extractor_id != extractor.extractor_id:
                    raise ValueError(
                        f"template {t.name!r} in {self.path} was made with extractor {t.extractor_id!r}; "
                        f"the extractor in use is {extractor.extractor_id!r} — remake it with "
                        f"`kinetoscope synth templates`")
        lengths = {len(t.key) for t in chosen}
        if len(lengths) > 1:
            raise ValueError(f"templates {list(names)} have keys of different lengths {sorted(lengths)}")
        return chosen


def make_template(image: np.ndarray, point: tuple[int, int], name: str, extractor: KeyExtractor,
                  source: str = "") -> Template:
    """The template at pixel ``point`` = (x, y) of ``image`` uint8 ``[H, W, 3]``: the key of the patch
    grid cell that covers the point."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"template image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    x, y = int(point[0]), int(point[1])
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"patch point ({x}, {y}) lies outside the {width}x{height} image {source}".rstrip())
    keys = np.asarray(extractor(image[None]))[0]  # [h, w, D]
    rows, cols = keys.shape[:2]
    col, row = min(cols - 1, x * cols // width), min(rows - 1, y * rows // height)
    return Template(name=name, key=[float(v) for v in keys[row, col]], extractor_id=extractor.extractor_id,
                    image=str(source), point=(x, y), patch=(col, row))


def template_from_file(image_path: str | Path, point: tuple[int, int], name: str, extractor: KeyExtractor,
                       library: str | Path, overwrite: bool = False) -> Template:
    """Read an image file (any format OpenCV reads), make the template at pixel ``point`` and add it to
    ``library``."""
    import cv2

    image_path = Path(image_path)
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR) if image_path.is_file() else None
    if image is None:
        raise FileNotFoundError(f"template image {image_path} does not exist or is not an image")
    template = make_template(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), point, name, extractor, source=str(image_path))
    TemplateLibrary(library).add(template, overwrite=overwrite)
    return template


def parse_point(text: str) -> tuple[int, int]:
    """``"x,y"`` -> ``(x, y)`` pixel coordinates."""
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--patch {text!r} must be two integers x,y (pixel column, row)") from None
    return x, y


# ---------------------------------------------------------------------------------------------------
# Saliency, noise, blend


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("the video has no frames")
    return frames


def saliency_maps(frames: np.ndarray, templates: Sequence[Template] | np.ndarray, extractor: KeyExtractor,
                  combine: str = "mean") -> np.ndarray:
    """Eqs. 5.1–5.2: float32 ``[T, H, W]`` in [0, 1] for frames uint8 ``[T, H, W, C]``.

    ``templates``: :class:`Template` objects or a ``[n, D]`` array of keys."""
    import cv2

    if combine not in COMBINE:
        raise ValueError(f"combine {combine!r} is not known; accepted: {', '.join(COMBINE)}")
    frames = _check_frames(frames)
    keys = np.asarray([t.key for t in templates] if not isinstance(templates, np.ndarray) else templates,
                      dtype=np.float32)
    if keys.ndim != 2 or len(keys) == 0:
        raise ValueError("saliency needs at least one template key")
    features = np.asarray(extractor(frames), dtype=np.float32)  # [T, h, w, D]
    if features.shape[-1] != keys.shape[1]:
        raise ValueError(f"template keys have length {keys.shape[1]} but extractor {extractor.extractor_id!r} "
                         f"gives keys of length {features.shape[-1]}")
    eps = 1e-12
    f = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), eps)
    k = keys / np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), eps)
    cos = np.maximum(0.0, np.einsum("thwd,nd->thwn", f, k))
    grid = cos.mean(-1) if combine == "mean" else cos.max(-1)
    height, width = frames.shape[1:3]
    out = np.empty((frames.shape[0], height, width), dtype=np.float32)
    for t, cell in enumerate(grid):
        out[t] = cv2.resize(cell.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def noise_bounds(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer bounds ``[ceil(μ−σ), floor(μ+σ)]`` per channel of Eq. 5.3, clipped to 0..255."""
    mu = np.broadcast_to(np.asarray(mean, dtype=np.float64), (channels,))
    sd = np.broadcast_to(np.asarray(std, dtype=np.float64), (channels,))
    if np.any(sd < 0):
        raise ValueError(f"noise std must be >= 0, got {list(sd)}")
    low = np.clip(np.ceil(mu - sd), 0, 255).astype(np.int64)
    high = np.clip(np.floor(mu + sd), 0, 255).astype(np.int64)
    return low, np.maximum(low, high)


def uniform_noise(shape: tuple[int, ...], low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 noise of ``shape`` (last axis = channels), uniform on the integers ``low..high`` per channel."""
    return rng.integers(low, high + 1, size=shape).astype(np.uint8)


def motion_noise(frames: np.ndarray, mean: Sequence[float], std: Sequence[float], *, flow: np.ndarray | None = None,
                 flow_method: str = "farneback", mode: str = "sequential", placement: str = "splat",
                 seed: int | np.random.SeedSequence = 0, flow_options: dict[str, Any] | None = None) -> np.ndarray:
    """Eqs. 5.3–5.4: motion-consistent noise uint8 ``[T, H, W, C]`` for frames uint8 ``[T, H, W, C]``.

    ``flow`` float ``[T-1, H, W, 2]`` (frame t to t+1) or computed with ``flow_method`` (any registered
    flow method of :mod:`kinetoscope.flow`)."""
    if mode not in NOISE_MODES:
        raise ValueError(f"noise mode {mode!r} is not known; accepted: {', '.join(NOISE_MODES)}")
    frames = _check_frames(frames)
    steps, height, width, channels = frames.shape
    low, high = noise_bounds(mean, std, channels)
    first = uniform_noise((height, width, channels), low, high, np.random.default_rng(seed))
    out = np.empty_like(frames)
    out[0] = first
    if steps < 2:
        return out
    if flow is None:
        from kinetoscope.flow import compute_flow

        flow = compute_flow(frames, flow_method, **(flow_options or {}))
    flow = np.asarray(flow, dtype=np.float32)[..., :2]
    if flow.shape != (steps - 1, height, width, 2):
        raise ValueError(f"flow must be [T-1, H, W, 2] = {(steps - 1, height, width, 2)}, got {flow.shape}")
    for t in range(1, steps):
        source = out[t - 1] if mode == "sequential" else first
        out[t] = move_noise(source, flow[t - 1], first, placement)
    return out


def blend(frames: np.ndarray, noise: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Eq. 5.5: ``O = I + S·(N − I)`` rounded to uint8; pixels with ``S = 0`` keep ``I`` bitwise."""
    s = np.asarray(saliency, dtype=np.float32)[..., None]
    image = frames.astype(np.float32)
    out = np.rint(image + s * (noise.astype(np.float32) - image))
    return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Baselines


def mask_fill(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Masking baseline: pixels under the person mask take the mean colour under the mask (per frame)."""
    frames = _check_frames(frames)
    masks = np.asarray(masks) != 0
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"masks must be [T, H, W] = {frames.shape[:3]} like the frames, got {masks.shape}")
    out = frames.copy()
    for t in range(len(frames)):
        if masks[t].any():
            mean = np.rint(frames[t][masks[t]].reshape(-1, frames.shape[-1]).mean(0)).astype(np.uint8)
            out[t][masks[t]] = mean
    return out


def pixelate(frames: np.ndarray, block: int) -> np.ndarray:
    """Pixelation baseline: ``block`` × ``block`` average pooling, each block filled with its mean
    (partial blocks at the right/bottom edge average what they cover)."""
    frames = _check_frames(frames)
    if block < 1:
        raise ValueError(f"pixelate block must be >= 1, got {block}")
    steps, height, width, channels = frames.shape
    rows, cols = -(-height // block), -(-width // block)
    padded_h, padded_w = rows * block, cols * block
    data = frames.astype(np.float64)
    weight = np.zeros((padded_h, padded_w))
    weight[:height, :width] = 1
    padded = np.zeros((steps, padded_h, padded_w, channels))
    padded[:, :height, :width] = data
    sums = padded.reshape(steps, rows, block, cols, block, channels).sum((2, 4))
    counts = weight.reshape(rows, block, cols, block).sum((1, 3))[None, :, :, None]
    means = np.rint(sums / counts).astype(np.uint8)
    full = np.repeat(np.repeat(means, block, axis=1), block, axis=2)
    return np.ascontiguousarray(full[:, :height, :width])


def blur_kernel(strength: str, height: int, width: int) -> tuple[int, float]:
    """Kernel size κ (odd) and σ of the blur baseline, scaled from 224² to a ``height`` × ``width`` frame."""
    if strength not in BLUR_STRENGTHS:
        raise ValueError(f"blur strength {strength!r} is not known; accepted: {', '.join(BLUR_STRENGTHS)}")
    kernel, sigma = BLUR_STRENGTHS[strength]
    scale = min(height, width) / 224.0
    size = max(1, int(round(kernel * scale)))
    return size + (size % 2 == 0), sigma * scale


def blur(frames: np.ndarray, strength: str = "weak") -> np.ndarray:
    """Gaussian blur baseline (Ilic 2024 §5.4): weak κ=13, σ=10 or strong κ=21, σ=10 at 224²."""
    import cv2

    frames = _check_frames(frames)
    size, sigma = blur_kernel(strength, *frames.shape[1:3])
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        out[t] = cv2.GaussianBlur(np.ascontiguousarray(frame), (size, size), sigma,
                                  borderType=cv2.BORDER_REFLECT).reshape(frame.shape)
    return out


def iid_noise(frames: np.ndarray, mean: Sequence[float], std: Sequence[float],
              seed: int | np.random.SeedSequence = 0) -> np.ndarray:
    """The §5.4 ablation: noise of Eq. 5.3 drawn anew for every frame (no motion)."""
    frames = _check_frames(frames)
    low, high = noise_bounds(mean, std, frames.shape[-1])
    return uniform_noise(frames.shape, low, high, np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------------------
# One video


@dataclass
class ObfuscationSettings:
    """Everything that decides the output of :func:`obfuscate` (stored beside an obfuscated dataset)."""

    method: str = "motion-noise"
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    combine: str = "mean"
    mode: str = "sequential"
    placement: str = "splat"
    flow_method: str = "farneback"
    block: int = 4
    strength: str = "weak"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"obfuscation method {self.method!r} is not known; accepted: {', '.join(METHODS)}")
        if self.combine not in COMBINE:
            raise ValueError(f"combine {self.combine!r} is not known; accepted: {', '.join(COMBINE)}")
        if self.mode not in NOISE_MODES:
            raise ValueError(f"noise mode {self.mode!r} is not known; accepted: {', '.join(NOISE_MODES)}")
        if self.method == "pixelate" and self.block not in PIXELATE_BLOCKS:
            raise ValueError(f"pixelate block must be one of {PIXELATE_BLOCKS} (Ilic 2024 §5.4), got {self.block}")
        if self.method == "blur" and self.strength not in BLUR_STRENGTHS:
            raise ValueError(f"blur strength {self.strength!r} is not known; accepted: {', '.join(BLUR_STRENGTHS)}")
        self.templates = tuple(self.templates)

    @property
    def needs_saliency(self) -> bool:
        return self.method in ("motion-noise", "iid-noise")

    def label(self) -> str:
        """A short name: ``motion-noise``, ``pixelate-16``, ``blur-strong``, ..."""
        if self.method == "pixelate":
            return f"pixelate-{self.block}"
        if self.method == "blur":
            return f"blur-{self.strength}"
        return self.method

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["templates"] = list(self.templates)
        return out

    @classmethod
    def from_label(cls, label: str, **options: Any) -> ObfuscationSettings:
        """Settings from a short name (:meth:`label`): ``motion-noise``, ``iid-noise``, ``mask``,
        ``pixelate-4``, ``pixelate-16``, ``blur-weak``, ``blur-strong``; ``options`` set the rest."""
        method, _, arg = label.partition("-") if label.startswith(("pixelate-", "blur-")) else (label, "", "")
        if method == "pixelate":
            if not arg.isdigit():
                raise ValueError(f"{label!r}: pixelate needs a block size, e.g. pixelate-4 or pixelate-16")
            options["block"] = int(arg)
        elif method == "blur":
            options["strength"] = arg
        return cls(method=method, **options)


def obfuscate(frames: np.ndarray, settings: ObfuscationSettings, *, template_keys: np.ndarray | None = None,
              extractor: KeyExtractor | None = None, masks: np.ndarray | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              flow: np.ndarray | None = None, seed: int | np.random.SeedSequence | None = None) -> np.ndarray:
    """The obfuscated version uint8 ``[T, H, W, C]`` of one clip.

    ``motion-noise`` / ``iid-noise`` need ``template_keys`` ``[n, D]`` and ``extractor``; ``mean`` /
    ``std`` (pixel units, per channel) default to the clip's own; ``mask`` needs ``masks`` ``[T, H, W]``."""
    frames = _check_frames(frames)
    seed = settings.seed if seed is None else seed
    if settings.method == "pixelate":
        return pixelate(frames, settings.block)
    if settings.method == "blur":
        return blur(frames, settings.strength)
    if settings.method == "mask":
        if masks is None:
            raise ValueError("method 'mask' needs person masks")
        return mask_fill(frames, masks)
    if template_keys is None or extractor is None:
        raise ValueError(f"method {settings.method!r} needs template keys and a key extractor")
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64)
    mean = pixels.mean(0) if mean is None else mean
    std = pixels.std(0) if std is None else std
    saliency = saliency_maps(frames, np.asarray(template_keys, dtype=np.float32), extractor, settings.combine)
    if settings.method == "iid-noise":
        noise = iid_noise(frames, mean, std, seed=seed)
    else:
        noise = motion_noise(frames, mean, std, flow=flow, flow_method=settings.flow_method, mode=settings.mode,
                             placement=settings.placement, seed=seed)
    return blend(frames, noise, saliency)


# ---------------------------------------------------------------------------------------------------
# A dataset


def dataset_mean_std(store: Any, records: Sequence[Any], max_videos: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (pixel units) over (up to ``max_videos`` evenly spaced) videos of a store."""
    picks = records if len(records) <= max_videos else [records[i] for i in
                                                         np.linspace(0, len(records) - 1, max_videos).astype(int)]
    total = sq = None
    count = 0
    for record in picks:
        frames = np.asarray(store.read_frames(record.video_id))
        pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64)
        total = pixels.sum(0) if total is None else total + pixels.sum(0)
        sq = (pixels ** 2).sum(0) if sq is None else sq + (pixels ** 2).sum(0)
        count += len(pixels)
    if not count:
        raise ValueError(f"{store.root} has no videos to take the noise mean and std from")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 0))
    return [float(v) for v in mean], [float(v) for v in std]


def make_obfuscated_dataset(
    src_root: str | Path,
    out_root: str | Path,
    settings: ObfuscationSettings,
    *,
    library: str | Path | None = None,
    extractor: KeyExtractor | None = None,
    masks_dir: str | Path | None = None,
    split: str | None = None,
    overwrite: bool = False,
    on_video: Callable[[str], None] | None = None,
) -> Path:
    """Write the obfuscated version of a dataset (``DatasetStore``: same ids, labels, subjects, splits).

    Video ``v`` is seeded by ``(settings.seed, v)``. Noise ``μ``/``σ`` are the whole source dataset's. For
    ``mask``, ``masks_dir/<video_id>.npy`` ``[T, H, W]`` per video; a video whose mask is missing or
    mis-shaped is listed in ``problems.csv`` and left out, the rest are written. ``split``: only the
    videos of that split (e.g. the evaluation split of a privacy–utility study). Resumes: videos already
    written with the same settings are skipped; other settings are refused unless ``overwrite``."""
    import shutil

    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.synth.appearance_free import video_seed
    from kinetoscope.utils import atomic_write_json, progress

    source = DatasetStore(src_root)
    meta, records = source.meta(), source.records(split)
    if not records:
        raise ValueError(f"{source.annotations_path} has no videos" + (f" in split {split!r}" if split else ""))
    out = Path(out_root)
    if out.resolve() == source.root.resolve():
        raise ValueError(f"output {out} is the source dataset; choose another directory")
    keys = None
    extra: dict[str, Any] = {}
    if settings.needs_saliency:
        if library is None or extractor is None:
            raise ValueError(f"method {settings.method!r} needs a template library and a key extractor")
        chosen = TemplateLibrary(library).select(settings.templates, extractor)
        keys = np.asarray([t.key for t in chosen], dtype=np.float32)
        mean, std = dataset_mean_std(source, source.records())  # the whole dataset's, whatever the split
        extra = {"extractor": extractor.extractor_id, "library": str(library), "mean": mean, "std": std,
                 "template_keys_sha": _keys_digest(keys)}
    if settings.method == "mask" and masks_dir is None:
        raise ValueError("method 'mask' needs a directory of <video_id>.npy person masks (--masks)")
    wanted = {"source": str(source.root), **settings.as_dict(), **extra,
              "masks_dir": str(masks_dir) if masks_dir else None, "split": split}
    marker = out / "privacy.json"
    if out.exists() and any(out.iterdir()):
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if previous != wanted:
            if not overwrite:
                raise FileExistsError(f"{out} holds other data; pass overwrite=True (CLI: --overwrite)")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, wanted)
    store = DatasetStore(out)
    problems: list[tuple[str, str]] = []
    written = []
    for record in progress(records, description=f"obfuscate ({settings.label()})"):
        vid = record.video_id
        masks = None
        if settings.method == "mask":
            mask_path = Path(masks_dir) / f"{vid}.npy"  # type: ignore[arg-type]
            if not mask_path.is_file():
                problems.append((vid, f"no person mask: {mask_path} is missing"))
                continue
            masks = np.load(mask_path, allow_pickle=False)
            shape = tuple(source.read_frames(vid).shape[:3])  # memory-mapped: only the header is read
            if masks.shape != shape:
                problems.append((vid, f"mask {mask_path} is {masks.shape}; the video needs [T, H, W] = {shape}"))
                continue
        written.append(record)
        if store.has_frames(vid):
            continue
        frames = np.asarray(source.read_frames(vid, mmap=False))
        result = obfuscate(frames, settings, template_keys=keys, extractor=extractor, masks=masks,
                           mean=extra.get("mean"), std=extra.get("std"), seed=video_seed(settings.seed, vid))
        store.write_frames(vid, result)
        if on_video is not None:
            on_video(vid)
    store.write_records(written)
    store.write_problems(problems)
    store.write_meta({**meta, "name": f"{meta.get('name', source.root.name)}-{settings.label()}",
                      "source": "kinetoscope synth obfuscate", "privacy": wanted})
    return out


def _keys_digest(keys: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(keys, dtype=np.float32).tobytes()).hexdigest()[:16]


__all__ = ["BLUR_STRENGTHS", "COMBINE", "DEFAULT_TEMPLATES", "METHODS", "NOISE_MODES", "PIXELATE_BLOCKS",
           "ColourKeyExtractor", "KeyExtractor", "ObfuscationSettings", "Template", "TemplateLibrary", "blend",
           "blur", "blur_kernel", "dataset_mean_std", "iid_noise", "make_obfuscated_dataset", "make_template",
           "mask_fill", "motion_noise", "noise_bounds", "obfuscate", "parse_point", "pixelate", "saliency_maps",
           "template_from_file", "uniform_noise"]
