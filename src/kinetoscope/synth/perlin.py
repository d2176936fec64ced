"""Perlin gradient noise and its fractal (multi-octave) sum, vectorised with numpy.

Used for the moving white-noise background of the Temporal Shape MNIST-bg domain (Broomé 2022 §5.1; see
docs/deviations.md, 'Temporal Shapes: 2Dot width, background noise and
sampling': integer octaves 1-9 per sequence, intensity 0.5, a new noise field
every frame, negatives clipped to 0).

Gradient noise (Perlin 1985, with the quintic fade of Perlin 2002): a random unit gradient sits on
every lattice corner; a sample point takes the dot product of each of its cell's four corner
gradients with its offset from that corner and blends the four values with the fade curve
``6t^5 - 15t^4 + 10t^3``. The noise is 0 on lattice points and, scaled by sqrt(2) here, lies in
[-1, 1]. Samples are taken at pixel centres, ``(i + 0.5) / period`` in lattice units.

Fractal noise sums octaves ``k = 0 .. octaves-1`` with period ``base_period / lacunarity^k`` and
amplitude ``persistence^k``, divided by the summed amplitude so the result stays in [-1, 1].
Deviation: an octave whose period would fall below ``min_period`` (one pixel by default) is sampled
at ``min_period`` instead, with its own lattice. Sampled at pixel centres, an octave with a period
of 1/2, 1/4, ... pixel lands exactly on lattice points and would add nothing at all; clamping keeps
every extra octave meaningful (finer, rougher texture), which is what the octave count is for.
"""

from __future__ import annotations

import numpy as np

_SQRT2 = np.float32(np.sqrt(2.0))


def fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade curve ``6t^5 - 15t^4 + 10t^3`` (0 and 1 with zero 1st/2nd derivative)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def gradient_noise(
    height: int,
    width: int,
    period: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One octave of 2D Perlin gradient noise on a ``height x width`` pixel grid.

    ``period`` is the lattice spacing in pixels. Gradients are unit vectors at uniform random
    angles drawn from ``rng``. Returns float32 ``[H, W]`` in [-1, 1].
    """
    if period <= 0:
        raise ValueError(f"period must be > 0 pixels, got {period}")
    if height < 1 or width < 1:
        raise ValueError(f"noise size must be positive, got {height}x{width}")
    ys = (np.arange(height, dtype=np.float64) + 0.5) / period
    xs = (np.arange(width, dtype=np.float64) + 0.5) / period
    iy = np.floor(ys).astype(np.intp)
    ix = np.floor(xs).astype(np.intp)
    fy = (ys - iy).astype(np.float32)
    fx = (xs - ix).astype(np.float32)
    angles = rng.random((int(iy[-1]) + 2, int(ix[-1]) + 2), dtype=np.float32) * np.float32(2 * np.pi)
    grad_x, grad_y = np.cos(angles), np.sin(angles)

    def corner(dy: int, dx: int) -> np.ndarray:
        rows, cols = iy + dy, ix + dx
        gx = grad_x[rows][:, cols]
        gy = grad_y[rows][:, cols]
        return gx * (fx - dx)[None, :] + gy * (fy - dy)[:, None]

    wx = fade(fx)[None, :]
    wy = fade(fy)[:, None]
    top = corner(0, 0) + wx * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + wx * (corner(1, 1) - corner(1, 0))
    return (top + wy * (bottom - top)) * _SQRT2


def octave_periods(octaves: int, base_period: float, lacunarity: float = 2.0, min_period: float = 1.0) -> list[float]:
    """Lattice period (pixels) of each octave: ``max(base_period / lacunarity^k, min_period)``."""
    return [max(base_period / lacunarity**k, min_period) for k in range(octaves)]


def fractal_noise_stack(
    height: int,
    width: int,
    octaves: int,
    rng: np.random.Generator,
    base_period: float,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    min_period: float = 1.0,
) -> np.ndarray:
    """Fractal noise for every octave count at once: entry ``o - 1`` sums octaves ``0 .. o-1``.

    The octave fields are shared, so entry ``o`` is entry ``o - 1`` plus one finer octave (each
    entry normalised by its own summed amplitude). Returns float32 ``[octaves, H, W]`` in [-1, 1].
    """
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    out = np.empty((octaves, height, width), dtype=np.float32)
    total = np.zeros((height, width), dtype=np.float32)
    amplitude_sum = 0.0
    for k, period in enumerate(octave_periods(octaves, base_period, lacunarity, min_period)):
        amplitude = persistence**k
        total += np.float32(amplitude) * gradient_noise(height, width, period, rng)
        amplitude_sum += amplitude
        out[k] = total / np.float32(amplitude_sum)
    return out


def fractal_noise(
    height: int,
    width: int,
    octaves: int,
    rng: np.random.Generator,
    base_period: float,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    min_period: float = 1.0,
) -> np.ndarray:
    """Fractal (fBm) Perlin noise with ``octaves`` octaves; float32 ``[H, W]`` in [-1, 1]."""
    return fractal_noise_stack(height, width, octaves, rng, base_period, persistence, lacunarity, min_period)[-1]
