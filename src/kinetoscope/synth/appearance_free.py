"""Appearance-free videos: random-dot noise that moves with the optical flow of a real video.

Ilic 2024 Ch. 4, §4.3 steps 1–3.
Given frames ``I[0..T-1]``:

1. ``R0``: one frame of i.i.d. uniform noise, independently per pixel and channel (drawn directly
   as integers uniform on 0..255, i.e. ``floor(256 U)`` with ``U ~ U[0, 1)``; ``grayscale=True`` copies
   one noise channel to every channel).
2. ``F[t-1,t]`` for every adjacent pair, with any backend of :mod:`kinetoscope.flow` (default
   ``auto``: RAFT as in the thesis when its weights are imported, else the measured fallback), or a
   precomputed ``flow``.
3. ``R[t]`` for ``t = 1..T-1`` by moving a noise frame with that *single* inter-frame flow, nearest
   neighbour only (rounded integer displacements and an explicit validity mask):

   * ``mode="first-frame"`` (default; the thesis text and the authors' released data): ``R[t]`` is
     ``R0`` moved by ``F[t-1,t]``. Nothing accumulates: a constant-velocity global translation gives
     ``R1 = ... = R[T-1]`` = R0 shifted once; the signal is *where* the flow is non-zero.
   * ``mode="sequential"``: ``R[t]`` is ``R[t-1]`` moved by ``F[t-1,t]``, so the noise travels with
     the moving surfaces (a random-dot cinematogram).

   Placement:

   * ``placement="splat"`` (default; the thesis' forward placement): the value at ``p`` moves to
     ``p + F(p)``. A pixel that receives several values (newly occluded) takes the one that moved the
     most — the content moving onto it, which is what occludes; ties go to the later pixel in raster
     order. Pixels nothing arrives at (de-occluded) and pixels whose source would come from outside
     the frame (border holes) take ``R0`` at that place, so the noise always covers the frame.
   * ``placement="sample"`` (the authors' public code): ``R[t](p) = S(p + F(p))`` (backward sampling
     with the forward flow), which flips the apparent direction of motion; samples from outside the
     frame take ``R0(p)``. Use it to reproduce their released data.

Output ``[R0, R1, ..., R[T-1]]``: uint8 ``[T, H, W, C]``, same shape as the input. The authors release
lossy mp4; noise compresses badly, so :func:`make_appearance_free_dataset` writes the lossless
``.npy`` frame cache (``DatasetStore``), with the flow used beside it. Deviations: frame 0 is R0 and
there are T output frames (the thesis' "t ∈ [1, T]" is off by one; see docs/deviations.md,
'Appearance-free frame count').
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("first-frame", "sequential")
PLACEMENTS = ("splat", "sample")


def _rng(seed: int | np.random.SeedSequence) -> np.random.Generator:
    return np.random.default_rng(seed)


def video_seed(seed: int, video_id: str) -> np.random.SeedSequence:
    """The per-video seed: ``(seed, crc32(video_id))`` — bitwise reproducible, independent of order."""
    return np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(video_id.encode("utf-8")),))


def noise_frame(height: int, width: int, channels: int, rng: np.random.Generator,
                grayscale: bool = False) -> np.ndarray:
    """``R0``: uint8 ``[H, W, C]`` i.i.d. uniform on 0..255 (one channel repeated when ``grayscale``)."""
    if grayscale:
        single = rng.integers(0, 256, size=(height, width, 1), dtype=np.uint8)
        return np.repeat(single, channels, axis=2)
    return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def move_noise(source: np.ndarray, flow: np.ndarray, fill: np.ndarray, placement: str = "splat") -> np.ndarray:
    """Move ``source`` ``[H, W, C]`` by ``flow`` ``[H, W, 2]`` (u = x, v = y, px) with nearest-neighbour
    placement; holes (nothing arrives, or the sample falls outside the frame) take ``fill`` (``R0``).
    See the module docstring for the ``splat`` / ``sample`` rules."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} is not known; accepted: {', '.join(PLACEMENTS)}")
    height, width = source.shape[:2]
    if flow.shape != (height, width, 2):
        raise ValueError(f"flow must be [H, W, 2] = {(height, width, 2)} to match the frame, got {flow.shape}")
    ys, xs = np.mgrid[0:height, 0:width]
    tx = xs + np.rint(flow[..., 0]).astype(np.int64)
    ty = ys + np.rint(flow[..., 1]).astype(np.int64)
    inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
    out = fill.copy()
    if placement == "sample":
        out[inside] = source[ty[inside], tx[inside]]
        return out
    # splat: resolve collisions explicitly (numpy leaves repeated-index assignment order unspecified)
    target = (ty * width + tx)[inside]
    source_index = (ys * width + xs)[inside]
    magnitude = np.hypot(flow[..., 0], flow[..., 1])[inside]
    order = np.lexsort((source_index, magnitude, target))  # by target, then motion, then raster order
    target, source_index = target[order], source_index[order]
    last = np.r_[target[1:] != target[:-1], True]  # the winner of each target is the last in its group
    flat_out = out.reshape(height * width, -1)
    flat_out[target[last]] = source.reshape(height * width, -1)[source_index[last]]
    return out


def appearance_free(
    frames: np.ndarray,
    flow_method: str = "auto",
    mode: str = "first-frame",
    placement: str = "splat",
    seed: int | np.random.SeedSequence = 0,
    grayscale: bool = False,
    flow: np.ndarray | None = None,
    **flow_options: Any,
) -> np.ndarray:
    """Appearance-free version of a clip (Ilic 2024 §4.3): uint8 ``[T, H, W, C]`` -> uint8 ``[T, H, W, C]``.

    ``flow``: precomputed ``float [T-1, H, W, 2]`` (``F[t]`` from frame t to t + 1, as
    :func:`kinetoscope.flow.compute_flow` returns); otherwise computed with ``flow_method`` and
    ``flow_options`` (default ``auto``: RAFT, as in Ilic 2024 §4.3, when its trained weights are found,
    else the fallback measured in docs/flow.md). ``mode``: ``first-frame`` | ``sequential``; ``placement``: ``splat`` |
    ``sample``; ``seed``: an int or a ``SeedSequence`` (see :func:`video_seed`)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got {frames.dtype} {frames.shape}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not known; accepted: {', '.join(MODES)}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} is not known; accepted: {', '.join(PLACEMENTS)}")
    steps, height, width, channels = frames.shape
    r0 = noise_frame(height, width, channels, _rng(seed), grayscale)
    out = np.empty_like(frames)
    out[0] = r0
    if steps < 2:
        return out
    if flow is None:
        from kinetoscope.flow import compute_flow

        flow = compute_flow(frames, flow_method, **flow_options)
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape != (steps - 1, height, width, 2):
        raise ValueError(f"flow must be [T-1, H, W, 2] = {(steps - 1, height, width, 2)}, got {flow.shape}")
    for t in range(1, steps):
        source = r0 if mode == "first-frame" else out[t - 1]
        out[t] = move_noise(source, flow[t - 1], r0, placement)
    return out


def make_appearance_free_dataset(
    src_root: str | Path,
    out_root: str | Path,
    flow_method: str = "auto",
    mode: str = "first-frame",
    placement: str = "splat",
    seed: int = 0,
    grayscale: bool = False,
    write_flow: bool = True,
    overwrite: bool = False,
    flow_options: dict[str, Any] | None = None,
) -> Path:
    """Write the appearance-free version of a dataset (``DatasetStore``) to ``out_root``.

    Same video ids, labels, splits, subjects and frame shapes as ``src_root``; frames are lossless
    ``.npy``. Video ``v`` is seeded by :func:`video_seed` ``(seed, v)``. With ``write_flow`` the flow
    that moved the noise is cached beside it as ``flow/<id>.npy`` (one field per frame, forward pairs,
    the last frame repeating the last pair, zero for a one-frame video — the ``data prepare --flow``
    convention, :func:`kinetoscope.flow.video_flow`). Resumes: videos
    already written with the same settings are skipped; other settings in an existing ``out_root`` are
    refused unless ``overwrite``. Returns ``out_root``.
    """
    import json
    import shutil

    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.flow import FlowSpec, video_flow
    from kinetoscope.utils import progress

    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not known; accepted: {', '.join(MODES)}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} is not known; accepted: {', '.join(PLACEMENTS)}")
    flow_spec = FlowSpec(method=flow_method, options=dict(flow_options or {}))  # a bad method fails before any write
    source = DatasetStore(src_root)
    meta = source.meta()
    records = source.records()
    out = Path(out_root)
    if out.resolve() == source.root.resolve():
        raise ValueError(f"output {out} is the source dataset; choose another directory")
    settings = {"source": str(source.root), "flow_method": flow_spec.method, "flow_options": dict(flow_spec.options),
                "mode": mode, "placement": placement, "seed": int(seed), "grayscale": bool(grayscale),
                "format": "npy (lossless)"}
    store = DatasetStore(out)
    progress_path = out / "appearance_free.json"
    if out.exists() and any(out.iterdir()):
        previous = json.loads(progress_path.read_text()) if progress_path.is_file() else None
        if previous != settings:
            if not overwrite:
                what = "other settings" if previous is not None else "something that is not an appearance-free dataset"
                raise FileExistsError(f"{out} holds {what}; pass overwrite=True (CLI: --overwrite) to replace it")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    from kinetoscope.utils import atomic_write_json

    atomic_write_json(progress_path, settings)
    for record in progress(records, description="appearance-free"):
        vid = record.video_id
        if store.has_frames(vid) and (not write_flow or store.has_flow(vid)):
            continue
        frames = np.asarray(source.read_frames(vid, mmap=False))
        per_frame = video_flow(flow_spec, frames)  # [T, H, W, 2]: F[t] = t -> t+1, last repeated; zero for T = 1
        noise = appearance_free(frames, mode=mode, placement=placement, seed=video_seed(seed, vid),
                                grayscale=grayscale, flow=per_frame[:-1])
        if write_flow:
            store.write_flow(vid, per_frame)
        store.write_frames(vid, noise)
    store.write_records(records)
    new_meta = {**meta, "name": f"{meta.get('name', source.root.name)}-appearance-free",
                "source": "kinetoscope synth appearance-free", "appearance_free": settings}
    if write_flow:
        new_meta["flow"] = flow_spec.as_dict()
    else:
        new_meta.pop("flow", None)
    store.write_meta(new_meta)
    return out


__all__ = ["MODES", "PLACEMENTS", "appearance_free", "make_appearance_free_dataset", "move_noise", "noise_frame",
           "video_seed"]
