"""Clip -> video aggregation (Broomé 2022 §3.2-3.3): mean of clip probabilities, majority vote
with random tie-break, and the MIL top-k% filter."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

AGGREGATIONS = ("mean", "vote", "topk")


def aggregate_videos(
    video_ids: list[str], scores: np.ndarray, method: str = "mean", top_fraction: float = 0.05, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """Video-level scores ``[V, K]`` from clip scores ``[N, K]`` (probabilities), in first-seen order.

    - ``mean``: average clip probabilities.
    - ``vote``: fraction of clips voting for each class; ties broken at random (seeded).
    - ``topk``: per class, the mean of its k = ceil(f * n_clips) highest clip probabilities (Broomé 2022 §3.3 MIL).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, vid in enumerate(video_ids):
        groups[vid].append(i)
    rng = np.random.default_rng(seed)
    order = list(groups)
    out = np.zeros((len(order), scores.shape[1]), dtype=np.float64)
    for row, vid in enumerate(order):
        s = scores[groups[vid]]
        if method == "mean":
            out[row] = s.mean(0)
        elif method == "vote":
            votes = np.bincount(s.argmax(1), minlength=s.shape[1]).astype(np.float64)
            winners = np.flatnonzero(votes == votes.max())
            votes[rng.choice(winners)] += 0.5  # tie-break, still a valid ranking
            out[row] = votes / votes.sum()
        elif method == "topk":
            k = max(1, math.ceil(top_fraction * len(s)))
            out[row] = np.sort(s, axis=0)[-k:].mean(0)
        else:
            raise ValueError(f"unknown aggregation {method!r}; use one of {AGGREGATIONS}")
    return order, out
