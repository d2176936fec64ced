"""The Temporal Shape dataset: one moving object traces a circle, spiral, line, rectangle or arc.

Broomé 2022 §5.1 (dataset) and §5.3 (cross-domain study); the open points are resolved as in
docs/deviations.md, 'Temporal Shapes: 2Dot width, background noise and sampling'.
The class is the *trajectory*; the object's appearance carries no class signal. Clips are 20 frames
of 64x64 grayscale, ``uint8 [T, H, W, 1]``, in four domains:

=========  =========================================================================
2dot       a small white square on black (nominal width 2; drawn 3 px wide, see below)
5dot       a 5-px white square on black
mnist      a 14x14 handwritten digit on black
mnist-bg   a 14x14 digit over moving white Perlin noise (integer octaves 1-9 per clip,
           intensity 0.5, a new noise field every frame, negatives clipped to 0)
=========  =========================================================================

Trajectories follow the authors' code: a list of per-frame velocities
(px/frame); each frame the object is drawn, then moved by that frame's velocity.

* circle: ``2 (cos phi, sin phi)``, ``phi = linspace(0, 2 pi, T)``, random reversal, random cyclic roll.
* arc: ``2 (cos phi, sin phi)``, ``phi`` spans pi from a uniform random start angle, random reversal.
* spiral: ``s t (cos t, sin t)``, ``t = linspace(0, R, T)``, R = 10 (8 for the digit domains),
  ``s in {0.2, 0.3, ..., 1.0}``, random reversal (outward or inward).
* line: constant velocity, direction uniform in (-pi, pi], speed in {1, 2, 3}.
* rectangle: directions (pi/2, pi, -pi/2, 0), T/4 frames per side (5 at T = 20), random reversal
  and roll (by whole sides), speed in {1, 2, 3}.

Start: each coordinate a uniform integer in ``[L, size - L)``, ``L = 2 R_eff + nominal symbol size``
with R_eff = 8 (circle, arc), R (spiral), 2 * speed (line, rectangle). Bounce: when the next
position would leave ``[0, size - symbol width]`` on an axis, that velocity component is negated
for all remaining frames.

Choices where the documents leave room (each documented here):

* Positions are the top-left corner of the symbol; drawn at the rounded position. The bounce range
  uses the *drawn* width, so the whole symbol always stays inside the frame (a position is also
  clipped into that range, which only matters if one step overshoots by more than the way back,
  e.g. fast spirals in a tiny frame). ``L`` uses the nominal size (2, 5, 14), which reproduces the
  thesis's variation count for spirals (20 x 20 starts x 9 scales x 2 directions = 7200).
* 2dot width: the code draws a ``(2 floor(s/2) + 1)``-px square, i.e. 3 px for
  s = 2 (matches the released data); ``exact_width=True`` draws exactly s px.
* Other frame counts: all velocities are multiplied by ``19 / (T - 1)`` so every shape keeps the
  spatial extent it has at T = 20 (at T = 20 the factor is exactly 1); the angle schedules are
  ``linspace`` over T frames, rectangle sides get ``T // 4`` frames (the first ``T % 4`` sides one
  more). ``frames >= 4``.
* Small frames: if ``[L, size - L)`` is empty the start is the centre of the valid range.
* MNIST-bg noise: fractal Perlin noise with base lattice period ``size / 4`` px,
  persistence 0.5, lacunarity 2; value ``255 * clip(0.5 * noise, 0, 1)`` with noise in [-1, 1];
  the digit is added on top (saturating). For speed, each frame's field is a fresh random window
  of a large precomputed noise texture per octave count (``8 * size`` px square, generated once per
  seed and pool); a window covers a tiny part of the texture, so consecutive frames are
  (practically) independent noise fields, as in the code.
* "Sampling with replacement" = independent random generation of every clip.
* Randomness: clip ``i`` has its own ``SeedSequence(seed, spawn_key=(stream, i))`` where the stream
  is fixed by domain and digit pool. So clip ``i`` is identical whatever ``num`` is, and the
  training pool and evaluation pool of every domain are independent draws even with one seed.
"""

from __future__ import annotations

import functools
import math
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinetoscope.synth.digits import BUNDLED, POOLS, describe_digits, load_digits_pool, resolve_digits_source
from kinetoscope.synth.perlin import fractal_noise_stack

CLASSES = ["circle", "spiral", "line", "rectangle", "arc"]  # the code's ids 0..4
DOMAINS = ("2dot", "5dot", "mnist", "mnist-bg")
FPS = 10
DEFAULT_FRAMES = 20
DEFAULT_SIZE = 64
DIGIT_SIZE = 14

ROUND_STEP = 2.0  # circle and arc: step length r (px/frame)
ROUND_MARGIN = 8  # R_eff of circle and arc
SPIRAL_TURN = {"dot": 10.0, "digit": 8.0}  # R: the spiral's parameter runs over [0, R]
SPIRAL_SCALES = tuple(round(0.1 * k, 1) for k in range(2, 11))  # s in {0.2, ..., 1.0}
SPEEDS = (1, 2, 3)  # line and rectangle, px/frame
RECTANGLE_DIRECTIONS = ((0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (1.0, 0.0))  # pi/2, pi, -pi/2, 0

NOISE_OCTAVES = (1, 9)  # inclusive range of octaves per clip
NOISE_INTENSITY = 0.5
NOISE_BASE_CELLS = 4  # lattice cells across the frame in the coarsest octave
NOISE_TEXTURE_FACTOR = 8  # noise texture side = 8 * size (at most 2048 px)

CHUNK = 250  # clips rendered at once when writing to disk


@dataclass(frozen=True)
class Domain:
    """How a domain draws its object: a square of ``nominal`` px, or a digit, optionally over noise."""

    name: str
    nominal: int
    digit: bool
    noise: bool


_DOMAINS = {
    "2dot": Domain("2dot", 2, digit=False, noise=False),
    "5dot": Domain("5dot", 5, digit=False, noise=False),
    "mnist": Domain("mnist", DIGIT_SIZE, digit=True, noise=False),
    "mnist-bg": Domain("mnist-bg", DIGIT_SIZE, digit=True, noise=True),
}


@dataclass(frozen=True)
class _Config:
    domain: Domain
    seed: int
    frames: int
    size: int
    width: int  # drawn symbol width (px)
    pool: str
    digits: str | Path | None
    class_ids: tuple[int, ...]


def get_domain(name: str) -> Domain:
    """The domain called ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in _DOMAINS:
        raise ValueError(f"unknown Temporal Shape domain {name!r}; valid domains: {', '.join(DOMAINS)}")
    return _DOMAINS[name]


def symbol_width(domain: str, exact_width: bool = False) -> int:
    """Drawn width (px) of the domain's object: ``2 floor(s/2) + 1`` for dots unless
    ``exact_width``, 14 for digits."""
    spec = get_domain(domain)
    if spec.digit or exact_width:
        return spec.nominal
    return 2 * (spec.nominal // 2) + 1


# -- trajectories ------------------------------------------------------------------------------
def class_velocities(
    name: str, rng: np.random.Generator, frames: int = DEFAULT_FRAMES, spiral_turn: float = 10.0
) -> tuple[np.ndarray, float]:
    """Per-frame velocities ``[T, 2]`` (x, y; px/frame, before the ``19/(T-1)`` rescaling) of one
    clip of class ``name``, and its margin radius R_eff. Draws the class's random choices from
    ``rng`` (reversal, roll, start angle, scale, speed, direction)."""
    if name == "circle":
        phi = np.linspace(0.0, 2.0 * np.pi, frames)
        v = ROUND_STEP * np.stack([np.cos(phi), np.sin(phi)], axis=1)
        if rng.integers(2):
            v = v[::-1]
        return np.roll(v, int(rng.integers(frames)), axis=0), ROUND_MARGIN
    if name == "arc":
        start = rng.random() * 2.0 * np.pi
        phi = start + np.linspace(0.0, np.pi, frames)
        v = ROUND_STEP * np.stack([np.cos(phi), np.sin(phi)], axis=1)
        return (v[::-1] if rng.integers(2) else v), ROUND_MARGIN
    if name == "spiral":
        scale = SPIRAL_SCALES[int(rng.integers(len(SPIRAL_SCALES)))]
        t = np.linspace(0.0, spiral_turn, frames)
        v = scale * t[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
        return (v[::-1] if rng.integers(2) else v), spiral_turn
    if name == "line":
        direction = np.pi - 2.0 * np.pi * rng.random()  # (-pi, pi]
        speed = SPEEDS[int(rng.integers(len(SPEEDS)))]
        v = np.tile([speed * math.cos(direction), speed * math.sin(direction)], (frames, 1))
        return v, 2 * speed
    if name == "rectangle":
        speed = SPEEDS[int(rng.integers(len(SPEEDS)))]
        sides = list(RECTANGLE_DIRECTIONS)
        if rng.integers(2):
            sides = sides[::-1]
        shift = int(rng.integers(4))
        sides = sides[shift:] + sides[:shift]
        lengths = [frames // 4 + (1 if k < frames % 4 else 0) for k in range(4)]
        v = np.repeat(np.asarray(sides, dtype=np.float64), lengths, axis=0) * speed
        return v, 2 * speed
    raise ValueError(f"unknown Temporal Shape class {name!r}; valid classes: {', '.join(CLASSES)}")


def integrate_with_bounce(starts: np.ndarray, velocities: np.ndarray, limit: float) -> np.ndarray:
    """Positions ``[N, T, 2]`` of objects that are drawn at ``starts [N, 2]`` and then moved by
    ``velocities [N, T, 2]`` one frame at a time; a velocity component is negated for all remaining
    frames when the next position would leave ``[0, limit]`` on that axis (the authors' code)."""
    starts = np.asarray(starts, dtype=np.float64)
    velocities = np.asarray(velocities, dtype=np.float64)
    n, t, _ = velocities.shape
    positions = np.empty((n, t, 2), dtype=np.float64)
    position = starts.copy()
    sign = np.ones((n, 2), dtype=np.float64)
    for k in range(t):
        positions[:, k] = position
        step = sign * velocities[:, k]
        nxt = position + step
        sign = np.where((nxt < 0) | (nxt > limit), -sign, sign)
        position = np.clip(position + sign * velocities[:, k], 0.0, limit)
    return positions


# -- noise background --------------------------------------------------------------------------
def _stream_key(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


@functools.lru_cache(maxsize=4)
def noise_textures(seed: int, pool: str, size: int) -> np.ndarray:
    """uint8 ``[9, S, S]`` MNIST-bg background textures, entry ``o - 1`` with ``o`` octaves:
    ``255 * clip(0.5 * fractal_noise, 0, 1)``, ``S = min(8 size, 2048)`` (at least ``2 size``).
    Deterministic for (seed, pool, size); cached."""
    side = max(2 * size, min(NOISE_TEXTURE_FACTOR * size, 2048))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_stream_key("noise", pool),)))
    stack = fractal_noise_stack(side, side, NOISE_OCTAVES[1], rng, base_period=size / NOISE_BASE_CELLS)
    textures = np.clip(np.rint(np.clip(stack * NOISE_INTENSITY, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    textures.setflags(write=False)
    return textures


# -- rendering ---------------------------------------------------------------------------------
def _render(config: _Config, indices: range) -> tuple[np.ndarray, np.ndarray]:
    """Clips ``indices`` of the configured stream: uint8 ``[N, T, H, W]`` and CLASSES ids ``[N]``."""
    domain, frames, size, width = config.domain, config.frames, config.size, config.width
    n = len(indices)
    stream = _stream_key(domain.name, config.pool)
    speed_scale = (DEFAULT_FRAMES - 1) / (frames - 1)
    spiral_turn = SPIRAL_TURN["digit" if domain.digit else "dot"]
    limit = size - width
    digits = load_digits_pool(config.digits, config.pool, width) if domain.digit else None
    side = noise_textures(config.seed, config.pool, size).shape[-1] if domain.noise else 0

    labels = np.empty(n, dtype=np.int64)
    velocities = np.empty((n, frames, 2), dtype=np.float64)
    starts = np.empty((n, 2), dtype=np.float64)
    digit_ids = np.zeros(n, dtype=np.int64)
    octaves = np.zeros(n, dtype=np.int64)
    offsets = np.zeros((n, frames, 2), dtype=np.int64)
    for j, i in enumerate(indices):
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(stream, i)))
        label = config.class_ids[int(rng.integers(len(config.class_ids)))]
        v, margin = class_velocities(CLASSES[label], rng, frames, spiral_turn)
        low = int(2 * margin + domain.nominal)
        high = size - low
        if high <= low:  # frame too small for the margin: start at the centre
            low, high = limit // 2, limit // 2 + 1
        labels[j] = label
        velocities[j] = v * speed_scale
        starts[j] = np.clip(rng.integers(low, high, size=2), 0, limit)
        if digits is not None:
            digit_ids[j] = rng.integers(len(digits))
        if domain.noise:
            octaves[j] = rng.integers(NOISE_OCTAVES[0], NOISE_OCTAVES[1] + 1)
            offsets[j] = rng.integers(0, side - size + 1, size=(frames, 2))

    positions = np.rint(integrate_with_bounce(starts, velocities, limit)).astype(np.intp)
    videos = np.zeros((n, frames, size, size), dtype=np.uint8)
    if domain.noise:
        textures = noise_textures(config.seed, config.pool, size)
        for o in np.unique(octaves):
            sel = np.flatnonzero(octaves == o)
            windows = np.lib.stride_tricks.sliding_window_view(textures[o - 1], (size, size))
            videos[sel] = windows[offsets[sel, :, 0], offsets[sel, :, 1]]
    ramp = np.arange(width)
    rows = positions[:, :, 1, None, None] + ramp[None, None, :, None]  # [N, T, w, 1]
    cols = positions[:, :, 0, None, None] + ramp[None, None, None, :]  # [N, T, 1, w]
    clip_idx = np.arange(n)[:, None, None, None]
    frame_idx = np.arange(frames)[None, :, None, None]
    if digits is None:
        videos[clip_idx, frame_idx, rows, cols] = 255
    else:
        patch = digits[digit_ids][:, None].astype(np.uint16)  # [N, 1, w, w]
        under = videos[clip_idx, frame_idx, rows, cols].astype(np.uint16)
        videos[clip_idx, frame_idx, rows, cols] = np.minimum(under + patch, 255).astype(np.uint8)
    return videos, labels


def _config(
    domain: str,
    seed: int,
    frames: int,
    size: int,
    digits: str | Path | None,
    digit_pool: str,
    classes: list[str] | None,
    exact_width: bool,
) -> _Config:
    spec = get_domain(domain)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if frames < 4:
        raise ValueError(f"frames must be >= 4 (a rectangle has 4 sides), got {frames}")
    width = symbol_width(domain, exact_width)
    if size <= width:
        raise ValueError(f"size must exceed the {domain} symbol width of {width} px, got {size}")
    if digit_pool not in POOLS:
        raise ValueError(f"unknown digit_pool {digit_pool!r}; valid pools: {', '.join(POOLS)}")
    if classes is None:
        class_ids = tuple(range(len(CLASSES)))
    else:
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes:
            raise ValueError(f"unknown class(es) {unknown or classes}; valid classes: {', '.join(CLASSES)}")
        class_ids = tuple(i for i, c in enumerate(CLASSES) if c in classes)
    return _Config(spec, int(seed), int(frames), int(size), width, digit_pool, digits, class_ids)


def temporal_shapes(
    num: int,
    domain: str = "2dot",
    seed: int = 0,
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
    digits: str | Path | None = None,
    digit_pool: str = "train",
    classes: list[str] | None = None,
    exact_width: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate ``num`` Temporal Shape clips in memory (Broomé 2022 §5.1).

    Returns ``(videos, labels, class_names)``: videos uint8 ``[N, T, H, W, 1]`` (T = ``frames``,
    H = W = ``size``), labels int64 ``[N]`` indexing ``class_names`` (CLASSES order, restricted to
    ``classes`` if given). ``digits``: a directory of MNIST IDX files, or ``None`` for
    ``$KINETOSCOPE_MNIST`` if set, else scikit-learn's bundled digits; ``digit_pool``
    ``"train"``/``"test"`` picks disjoint digit pools and an independent random stream. Clip ``i`` is the
    same for every ``num`` > ``i``.
    """
    digits = resolve_digits_source(digits)
    config = _config(domain, seed, frames, size, digits, digit_pool, classes, exact_width)
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    videos, ids = _render(config, range(int(num)))
    names = [CLASSES[i] for i in config.class_ids]
    remap = {cid: k for k, cid in enumerate(config.class_ids)}
    labels = np.asarray([remap[int(i)] for i in ids], dtype=np.int64)
    return videos[..., None], labels, names


# -- on-disk dataset ---------------------------------------------------------------------------
_DATASET_ENTRIES = ("dataset.json", "annotations.csv", "problems.csv", "frames", "flow", "previews")


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise FileExistsError(
            f"output directory {out} is not empty ({shown}); pass overwrite=True (CLI: --overwrite) "
            "to replace the dataset in it"
        )
    for name in _DATASET_ENTRIES:  # dataset.json first: a half-replaced dataset never looks finished
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def split_assignment(num: int, split: str, val_fraction: float, seed: int) -> list[str]:
    """Split name of each clip: ``"trainval"`` -> a seeded random ``round(num * val_fraction)``
    clips are ``"val"``, the rest ``"train"`` (the code's 4000/1000 split of 5000); any other name
    -> every clip in that split."""
    if split != "trainval":
        return [split] * num
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_stream_key("split"),)))
    val = set(rng.permutation(num)[: round(num * val_fraction)].tolist())
    return ["val" if i in val else "train" for i in range(num)]


def generate_temporal_shapes(
    out_dir: str | Path,
    domain: str = "2dot",
    num: int = 5000,
    split: str = "train",
    val_fraction: float = 0.2,
    seed: int = 0,
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
    digits: str | Path | None = None,
    digit_pool: str | None = None,
    overwrite: bool = False,
    gifs: int = 5,
    exact_width: bool = False,
) -> Path:
    """Write ``num`` Temporal Shape clips as a kinetoscope dataset (``DatasetStore``) in ``out_dir``.

    Layout: ``dataset.json`` (written last), ``annotations.csv`` (one VideoRecord per clip,
    ``video_id = <domain>_<index:06d>``, label = class name, split, domain, fps 10),
    ``frames/<video_id>.npy`` uint8 ``[T, H, W, 1]``, ``previews/*.gif`` (``gifs`` GIFs, one per
    class first). ``split="trainval"`` splits the clips at random into train/val by
    ``val_fraction`` (Broomé 2022 §5.1: 5000 -> 4000/1000); any other value (``"train"``, ``"test"``, ...)
    puts every clip in that split. ``digit_pool`` defaults to ``"train"`` for the train/trainval
    splits and ``"test"`` otherwise. A non-empty ``out_dir`` is refused unless ``overwrite`` (then
    only the dataset's own entries are replaced), also when it already holds this very dataset.
    Returns ``out_dir``.
    """
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord
    from kinetoscope.synth.preview import write_gif
    from kinetoscope.utils import progress

    if not split or split != split.strip() or "," in split:
        raise ValueError(f"split must be a non-empty name without commas or spaces around it, got {split!r}")
    if digit_pool is None:
        digit_pool = "train" if split in ("train", "trainval") else "test"
    digits = resolve_digits_source(digits)
    config = _config(domain, seed, frames, size, digits, digit_pool, None, exact_width)
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    splits = split_assignment(num, split, val_fraction, seed)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    store = DatasetStore(out)

    labels = np.empty(num, dtype=np.int64)
    chunks = [range(start, min(start + CHUNK, num)) for start in range(0, num, CHUNK)]
    for chunk in progress(chunks, total=len(chunks), description=f"temporal-shapes {domain}"):
        videos, ids = _render(config, chunk)
        labels[chunk.start : chunk.stop] = ids
        for j, i in enumerate(chunk):
            store.write_frames(_video_id(domain, i), videos[j][..., None])

    duration = frames / FPS
    store.write_records(
        VideoRecord(
            video_id=_video_id(domain, i),
            label=CLASSES[int(labels[i])],
            split=splits[i],
            domain=domain,
            fps=float(FPS),
            num_frames=frames,
            duration=duration,
        )
        for i in range(num)
    )
    for i in _preview_indices(labels, gifs):
        name = f"{_video_id(domain, i)}_{CLASSES[int(labels[i])]}.gif"
        write_gif(out / "previews" / name, store.read_frames(_video_id(domain, i)), fps=FPS, scale=4)
    store.write_meta(
        {
            "name": f"temporal-shapes-{domain}",
            "classes": list(CLASSES),
            "fps": FPS,
            "size": [size, size],
            "channels": 1,
            "frames": frames,
            "domain": domain,
            "seed": seed,
            "source": "kinetoscope synth temporal-shapes",
            "num": num,
            "split": split,
            "val_fraction": val_fraction if split == "trainval" else None,
            "digit_pool": digit_pool if config.domain.digit else None,
            "digits": (str(digits) if digits is not None else BUNDLED) if config.domain.digit else None,
            "digits_used": describe_digits(digits, digit_pool, config.width) if config.domain.digit else None,
            "symbol_width": config.width,
        }
    )
    return out


def _video_id(domain: str, index: int) -> str:
    return f"{domain}_{index:06d}"


def _preview_indices(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` clip indices: the first clip of each class, then the second of each, ..."""
    per_class = [np.flatnonzero(labels == c).tolist() for c in range(len(CLASSES))]
    picked: list[int] = []
    rank = 0
    while len(picked) < count and any(rank < len(p) for p in per_class):
        picked += [p[rank] for p in per_class if rank < len(p)][: count - len(picked)]
        rank += 1
    return picked
