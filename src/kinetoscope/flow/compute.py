"""Dense optical flow between frames with OpenCV: Farnebäck, Dual TV-L1 and DIS.

* ``farneback`` — ``cv2.calcOpticalFlowFarneback`` with the settings of Broomé 2022 §3.2 (and the
  authors' code): grayscale, ``pyr_scale 0.5, levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma
  1.2, flags 0``; the large window gives the soft, blurry flow the pain models were trained on.
* ``tvl1`` — ``cv2.optflow.DualTVL1OpticalFlow`` (opencv-contrib) with OpenCV's defaults, the
  flow of the two-stream networks of Feichtenhofer 2017 Ch. 3–5 (*code*: ``gpu_flow`` uses Dual-TV-L1 defaults).
* ``dis`` — ``cv2.DISOpticalFlow`` (Kroeger et al. 2016) with the ``ultrafast | fast | medium``
  presets; the fast fallback when RAFT is unavailable (Ilic 2024 §4.3 uses RAFT; see docs/deviations.md,
  'Appearance-free flow without RAFT weights').
* ``raft`` — RAFT (Teed & Deng 2020), the flow of Ilic 2024 §4.3 / §4.5, implemented in
  :mod:`kinetoscope.flow.raft` with torchvision's trained weights (imported once; not downloadable
  here). It runs on colour frames, batched, on any torch device.

A flow field ``F[t]`` is ``float32 [H, W, 2]`` = ``(u, v)`` in pixels, from frame ``t`` to frame
``t + 1``: the content at ``(x, y)`` in frame ``t`` is at ``(x + u, y + v)`` in frame ``t + 1``.
The OpenCV methods convert frames to grayscale first (``COLOR_RGB2GRAY``; one-channel frames pass
through).

Every method is registered in :data:`kinetoscope.registry.FLOW_METHODS`; a builder takes the
method's options and returns an *estimator* ``(previous_gray, next_gray) -> float32 [H, W, 2]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from kinetoscope.registry import FLOW_METHODS

Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@FLOW_METHODS.register("farneback")
def farneback(
    pyr_scale: float = 0.5,
    levels: int = 3,
    winsize: int = 15,
    iterations: int = 3,
    poly_n: int = 5,
    poly_sigma: float = 1.2,
    flags: int = 0,
) -> Estimator:
    """Farnebäck polynomial-expansion flow; defaults are Broomé 2022's (§3.2 and the authors' code)."""

    def estimate(previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(
            previous, following, None, pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags
        )

    return estimate


@FLOW_METHODS.register("tvl1")
def tvl1(
    tau: float = 0.25,
    lambda_: float = 0.15,
    theta: float = 0.3,
    nscales: int = 5,
    warps: int = 5,
    epsilon: float = 0.01,
    inner_iterations: int = 30,
    outer_iterations: int = 10,
    scale_step: float = 0.8,
    gamma: float = 0.0,
    median_filtering: int = 5,
) -> Estimator:
    """Dual TV-L1 (Zach et al. 2007) from opencv-contrib; defaults are OpenCV's, as in Feichtenhofer 2017's code."""
    optflow = getattr(cv2, "optflow", None)
    if optflow is None or not hasattr(optflow, "DualTVL1OpticalFlow_create"):
        raise RuntimeError(
            "flow method 'tvl1' needs cv2.optflow.DualTVL1OpticalFlow_create from opencv-contrib; "
            "install opencv-contrib-python-headless (not opencv-python), or use method 'dis' or 'farneback'"
        )
    solver = optflow.DualTVL1OpticalFlow_create(
        tau=tau,
        lambda_=lambda_,
        theta=theta,
        nscales=nscales,
        warps=warps,
        epsilon=epsilon,
        innnerIterations=inner_iterations,  # sic: OpenCV's keyword name
        outerIterations=outer_iterations,
        scaleStep=scale_step,
        gamma=gamma,
        medianFiltering=median_filtering,
    )

    def estimate(previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        return solver.calc(previous, following, None)

    return estimate


@FLOW_METHODS.register("dis")
def dis(
    preset: str = "medium",
    finest_scale: int | None = None,
    patch_size: int | None = None,
    patch_stride: int | None = None,
    gradient_descent_iterations: int | None = None,
    variational_refinement_iterations: int | None = None,
    use_mean_normalization: bool | None = None,
    use_spatial_propagation: bool | None = None,
) -> Estimator:
    """Dense Inverse Search flow. ``preset``: ultrafast | fast | medium; an option left ``None`` keeps
    the preset's value (e.g. ``finest_scale=0`` refines to full resolution instead of 1/2 or 1/4)."""
    if preset not in DIS_PRESETS:
        raise ValueError(f"dis preset {preset!r} is not one of {', '.join(DIS_PRESETS)}")
    solver = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    setters = {
        "setFinestScale": finest_scale,
        "setPatchSize": patch_size,
        "setPatchStride": patch_stride,
        "setGradientDescentIterations": gradient_descent_iterations,
        "setVariationalRefinementIterations": variational_refinement_iterations,
        "setUseMeanNormalization": use_mean_normalization,
        "setUseSpatialPropagation": use_spatial_propagation,
    }
    for setter, value in setters.items():
        if value is not None:
            getattr(solver, setter)(value)

    def estimate(previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        return solver.calc(previous, following, None)

    return estimate


@FLOW_METHODS.register("raft")
def raft(
    variant: str = "large",
    weights: str | None = None,
    iterations: int = 12,
    batch_size: int = 4,
    device: str | None = None,
    upsample: float = 1.0,
) -> Estimator:
    """RAFT (Teed & Deng 2020; Ilic 2024 §4.3, §4.5) with torchvision's trained weights, imported once by
    ``kinetoscope models import --from torchvision raft_large FILE``. ``variant``: large | small;
    ``weights``: a ``.safetensors`` / ``.pth`` file (default ``$KINETOSCOPE_RAFT_WEIGHTS``, else the cache);
    ``iterations``: refinement steps (12, torchvision's default); ``batch_size``: pairs per forward pass;
    ``device``: where it runs (default: the command's ``--accelerator``; ``auto`` = CUDA when available);
    ``upsample``: bilinear factor applied to the frames first. Frames of any size: edge-padded to a
    multiple of 8 and >= 128 px, flow cropped back (see :mod:`kinetoscope.flow.raft`). Colour frames are
    used as they are."""
    from kinetoscope.flow.raft import raft_estimator

    return raft_estimator(variant, weights, iterations, batch_size, device, upsample)


# The appearance-free default without RAFT weights: the rule "most accurate of the methods within 2x of the
# fastest" applied to benchmarks/flow.py (256², 1 thread: DIS fast at 0.55-0.60x of DIS ultrafast's frames/s,
# EPE mean 0.234 vs 0.259; docs/flow.md "which flow is the default").
AFD_FALLBACK: tuple[str, dict[str, Any]] = ("dis", {"preset": "fast"})


def resolve_method(method: str, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``auto`` -> ``raft`` when trained RAFT weights are found (Ilic 2024 §4.3 uses RAFT; the large model,
    else the small one), else :data:`AFD_FALLBACK` with a logged warning; other methods pass unchanged."""
    options = dict(options or {})
    if method != "auto":
        return method, options
    if options:
        raise ValueError(f"flow method 'auto' takes no options (got {sorted(options)}); name the method instead")
    from kinetoscope.flow.raft import raft_weights_path

    for variant in ("large", "small"):  # the large model when both are imported
        try:
            raft_weights_path(variant)
            return "raft", ({} if variant == "large" else {"variant": variant})
        except FileNotFoundError:
            pass
    method, fallback = AFD_FALLBACK
    logging.getLogger(__name__).warning(
        "flow method 'auto': no trained RAFT weights (kinetoscope models import --from torchvision raft_large "
        "FILE); using %s %s", method, fallback)
    return method, dict(fallback)


def flow_estimator(method: str = "farneback", **options: Any) -> Estimator:
    """The estimator ``(previous_gray, next_gray) -> float32 [H, W, 2]`` of a registered method
    (``auto``: see :func:`resolve_method`).

    Unknown methods raise ``KeyError`` listing the valid ones; unknown options raise ``ValueError``
    listing the options the method takes."""
    method, options = resolve_method(method, options)
    if method not in FLOW_METHODS:
        raise KeyError(
            f"unknown flow method {method!r}; valid flow methods: {', '.join(FLOW_METHODS.names())}"
        )
    FLOW_METHODS.check_options(method, options, where=f"flow method {method!r}")
    return FLOW_METHODS.get(method)(**options)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """``uint8 [T, H, W, C]`` (C = 1 or 3, RGB) or ``[T, H, W]`` -> ``uint8 [T, H, W]``."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got dtype {frames.dtype}")
    if frames.ndim == 3:
        return frames
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [T, H, W, C] with C = 1 or 3, got shape {frames.shape}")
    if frames.shape[-1] == 1:
        return frames[..., 0]
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


def compute_flow(frames: np.ndarray, method: str = "farneback", **options: Any) -> np.ndarray:
    """Flow between consecutive frames: ``uint8 [T, H, W, C]`` -> ``float32 [T-1, H, W, 2]`` (u, v px).

    ``F[t]`` is the flow from frame ``t`` to frame ``t + 1``. ``method``: farneback (Broomé 2022
    settings by default) | tvl1 | dis | raft (trained weights needed, see :func:`raft`); ``options``
    are the method's keyword options (see
    ``FLOW_METHODS.options(method)``)."""
    gray = to_gray(frames)
    if gray.shape[0] < 2:
        raise ValueError(f"compute_flow needs at least 2 frames, got {gray.shape[0]}")
    estimate = flow_estimator(method, **options)
    return _flow_of_pairs(frames, gray, [(t, t + 1) for t in range(gray.shape[0] - 1)], estimate)


def _flow_of_pairs(
    frames: np.ndarray, gray: np.ndarray, pairs: Sequence[tuple[int, int]], estimate: Estimator
) -> np.ndarray:
    """Flow of each pair; a ``batched`` estimator (RAFT) gets the colour frames and all pairs at once."""
    if getattr(estimate, "batched", False):
        return estimate.estimate_pairs(frames, list(pairs))
    out = np.empty((len(pairs), *gray.shape[1:3], 2), dtype=np.float32)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for k, pair in enumerate(pairs):
        if pair not in cache:
            cache = {pair: estimate(np.ascontiguousarray(gray[pair[0]]), np.ascontiguousarray(gray[pair[1]]))}
        out[k] = cache[pair]
    return out


def flow_pairs(indices: Sequence[int], num_frames: int, pair: str = "forward") -> list[tuple[int, int]]:
    """The adjacent pair of source frames whose flow represents each selected frame.

    ``forward``: frame ``i`` gets ``(i, i + 1)`` — the motion leaving the frame; the last source frame
    has no successor and gets ``(i - 1, i)``. ``backward``: ``(i - 1, i)`` — the motion that arrived;
    frame 0 gets ``(0, 1)``."""
    if pair not in ("forward", "backward"):
        raise ValueError(f"pair must be 'forward' or 'backward', got {pair!r}")
    if num_frames < 2:
        raise ValueError(f"flow needs at least 2 source frames, got {num_frames}")
    pairs = []
    for i in indices:
        i = int(i)
        if not 0 <= i < num_frames:
            raise IndexError(f"frame index {i} is outside the {num_frames} source frames")
        start = i if pair == "forward" else i - 1
        start = min(max(start, 0), num_frames - 2)
        pairs.append((start, start + 1))
    return pairs


def match_times(target_times: np.ndarray, source_times: np.ndarray) -> np.ndarray:
    """For each target timestamp, the index of the source frame on screen at that time (the last source
    frame with timestamp ``<=`` it; the first frame for earlier times). Matches ``decode_video``'s
    resampling rule, so a 2 fps frame ``k`` maps to 16 fps frame ``8k`` (Broomé 2022 §3.2)."""
    source_times = np.asarray(source_times, dtype=np.float64)
    target_times = np.asarray(target_times, dtype=np.float64)
    index = np.searchsorted(source_times, target_times + 1e-6, side="right") - 1
    return np.clip(index, 0, len(source_times) - 1).astype(np.int64)


def flow_at_frames(
    frames: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    method: str = "farneback",
    pair: str = "forward",
    **options: Any,
) -> np.ndarray:
    """One flow field per selected frame, from a (higher-rate) frame sequence.

    ``frames``: ``uint8 [T, H, W, C]`` at the flow rate (Broomé 2022: 16 fps); ``indices``: the frame of
    that sequence matching each low-rate RGB frame (Broomé 2022: 2 fps; see :func:`match_times`).
    Returns ``float32 [len(indices), H, W, 2]``; field ``k`` is the flow of the adjacent pair chosen by
    :func:`flow_pairs` for ``indices[k]`` (default ``forward``: from frame ``i`` to ``i + 1``). Only the
    needed pairs are computed. With ``indices = range(T)`` this is :func:`compute_flow` aligned one per
    frame (the last frame repeats the last pair)."""
    gray = to_gray(frames)
    pairs = flow_pairs(list(indices), gray.shape[0], pair)
    return _flow_of_pairs(frames, gray, pairs, flow_estimator(method, **options))
