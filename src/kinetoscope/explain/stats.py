"""Statistics of explanations and the comparison of two models (Mänttäri 2020 §4.3, Tables 3–4).

* **Blobs**: "the blob detection tool from OpenCV" (Mänttäri 2020 §4.3, Table 3 caption) —
  ``cv2.SimpleBlobDetector`` (``detector="simple"``, the default) on each Grad-CAM frame min-max
  normalised to 0-255: bright blobs, binarised at thresholds from ``threshold`` (0.5 of the range) to the
  maximum in steps of 10 grey levels, kept when found at two or more of them (OpenCV's default
  repeatability); no circularity, convexity or inertia filter, any area from 1 px to the whole frame
  (OpenCV's default cap of 5000 px would drop large blobs). A blob's position is the keypoint and its
  size the area of the keypoint's circle, ``π (size / 2)²`` px. The paper gives no detector settings;
  these are recorded in docs/deviations.md ("Blob detector settings"). ``detector="components"`` is the
  alternative: 8-connected components of the map thresholded at ``threshold``
  (``cv2.connectedComponentsWithStats``; size = area in pixels, position = centroid).
  Per clip: **blob count** = mean blobs per frame, **blob size** and **centre distance** (px to the frame
  centre) = means over all the clip's blobs.
* **Mask length** = frames with ``m > 0.5``; **drop ratio** ``(OS - FS) / (OS - RS)`` over the
  clips that pass the 0.001 filter, **drop difference** ``RS - FS`` over all clips.
* Two models are compared with Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

STATISTICS = ("blob_count", "blob_size", "centre_distance", "mask_length", "drop_ratio", "drop_difference")
HEADERS = {
    "blob_count": "blob count",
    "blob_size": "blob size",
    "centre_distance": "centre dist.",
    "mask_length": "mask length",
    "drop_ratio": "drop ratio",
    "drop_difference": "drop diff.",
}


def _normalise(frame: np.ndarray) -> np.ndarray:
    low, high = float(frame.min()), float(frame.max())
    if high <= low:
        return np.zeros_like(frame, dtype=np.float32)
    return ((frame - low) / (high - low)).astype(np.float32)


BLOB_DETECTORS = ("simple", "components")


def frame_blobs(heatmap: np.ndarray, threshold: float = 0.5,
                detector: str = "simple") -> list[tuple[float, float, float]]:
    """Blobs of one frame's map ``[H, W]``: ``[(area_px, centre_x, centre_y), ...]``."""
    import cv2

    norm = _normalise(np.asarray(heatmap, dtype=np.float32))
    if detector == "components":
        binary = (norm >= threshold).astype(np.uint8)
        if not binary.any() or norm.max() == 0:
            return []
        count, _, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
        return [(float(stats[i, cv2.CC_STAT_AREA]), float(centroids[i, 0]), float(centroids[i, 1]))
                for i in range(1, count)]
    if detector == "simple":
        params = cv2.SimpleBlobDetector_Params()
        params.filterByColor, params.blobColor = True, 255
        params.minThreshold, params.maxThreshold, params.thresholdStep = threshold * 255, 255, 10
        params.filterByArea, params.minArea = True, 1
        params.maxArea = float(norm.shape[0] * norm.shape[1])
        params.filterByCircularity = params.filterByConvexity = params.filterByInertia = False
        found = cv2.SimpleBlobDetector_create(params).detect((norm * 255).astype(np.uint8))
        return [(math.pi * (k.size / 2) ** 2, float(k.pt[0]), float(k.pt[1])) for k in found]
    raise ValueError(f"detector={detector!r}; expected one of {', '.join(BLOB_DETECTORS)}")


def blob_statistics(heatmaps: np.ndarray, threshold: float = 0.5, detector: str = "simple") -> dict[str, float]:
    """Blob count (mean per frame), blob size (mean px) and centre distance (mean px) of one clip's
    Grad-CAM maps ``[T, H, W]`` with ``detector`` ("simple" = OpenCV's SimpleBlobDetector, the paper's;
    "components" = connected components). Size and distance are NaN when no frame has a blob."""
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be [T, H, W]; got shape {heatmaps.shape}")
    _, height, width = heatmaps.shape
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    counts, sizes, distances = [], [], []
    for frame in heatmaps:
        blobs = frame_blobs(frame, threshold, detector)
        counts.append(len(blobs))
        for area, x, y in blobs:
            sizes.append(area)
            distances.append(math.hypot(x - centre_x, y - centre_y))
    return {
        "blob_count": float(np.mean(counts)),
        "blob_size": float(np.mean(sizes)) if sizes else float("nan"),
        "centre_distance": float(np.mean(distances)) if distances else float("nan"),
    }


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std (ddof 1) and count of the finite values (NaN = filtered out)."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "n": int(finite.size),
        "filtered": int(array.size - finite.size),
    }


def welch_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's t-test of two samples (NaNs dropped): ``{t, p, n_a, n_b}``."""
    from scipy.stats import ttest_ind

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return {"t": float("nan"), "p": float("nan"), "n_a": int(x.size), "n_b": int(y.size)}
    result = ttest_ind(x, y, equal_var=False)
    return {"t": float(result.statistic), "p": float(result.pvalue), "n_a": int(x.size), "n_b": int(y.size)}


def _cell(summary: dict[str, float], digits: int = 2) -> str:
    if not summary["n"]:
        return "–"
    std = "" if math.isnan(summary["std"]) else f"±{summary['std']:.{digits}g}"
    return f"{summary['mean']:.{digits + 1}g}{std}"


def comparison_table(per_model: Mapping[str, Mapping[str, Sequence[float]]],
                     statistics: Sequence[str] = STATISTICS) -> tuple[list[str], list[list[Any]]]:
    """A table shaped like Mänttäri 2020 Tables 3–4: one row per model of ``mean±std`` per statistic; with
    exactly two models a last row of Welch p-values. ``per_model[name][statistic]`` are per-clip
    values (NaN = filtered). Returns ``(header, rows)``."""
    present = [s for s in statistics if any(s in v for v in per_model.values())]
    header = ["model", *(HEADERS.get(s, s) for s in present)]
    rows: list[list[Any]] = []
    for name, values in per_model.items():
        rows.append([name, *(_cell(summarise(values.get(s, []))) for s in present)])
    if len(per_model) == 2:
        (_, a), (_, b) = per_model.items()
        p_values = []
        for s in present:
            p = welch_test(a.get(s, []), b.get(s, []))["p"]
            p_values.append("–" if math.isnan(p) else f"{p:.2g}")
        rows.append(["Welch p", *p_values])
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def clip_statistics(values: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Summaries of every statistic present in per-clip rows (``index.csv`` / ``Explanation.values``)."""
    out = {}
    for name in STATISTICS:
        column = [row.get(name) for row in values if name in row]
        if column:
            out[name] = summarise([float("nan") if v in (None, "") else float(v) for v in column])
    return out
