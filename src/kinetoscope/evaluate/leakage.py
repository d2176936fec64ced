"""Leakage probes of Ilic 2024 Ch. 4: does a single frame (or a single flow image) tell the class?

* :func:`frame_network_probe` — the single-frame network probe of §4.4: a 2D ResNet
  (:class:`kinetoscope.models.twostream.FrameResNet` on one-frame clips), trained from scratch (or from
  imported ``.safetensors`` weights) on random single frames of the training videos and tested on
  random frames of the test videos. ``kind="frames"`` probes the frames themselves (RGB or
  appearance-free); ``kind="flow"`` probes optical-flow images (the flow's colour-wheel picture,
  normalised by each video's largest magnitude — the UCF101Flow images of §4.4, which leak shape:
  65.6 % RGB / 29.4 % flow / 1.1 % AFD101, chance 0.99 %).
* :func:`probe_statistics` — accuracy with a 95 % Clopper–Pearson interval and a two-sided binomial
  test against chance (the largest class share of the test samples).
* :func:`select_confusable_subset` — the AFD5 selection of §4.4: among classes recognised at least
  ``min_acc`` of the time, the ``k`` classes that are most confused with each other.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("frames", "flow")


def probe_statistics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, chance (largest class share), n, 95 % Clopper–Pearson interval and binomial p-value."""
    from scipy.stats import binomtest

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = int(len(y_true))
    if n == 0:
        raise ValueError("no test samples")
    correct = int((y_true == y_pred).sum())
    chance = float(np.bincount(y_true).max() / n)
    test = binomtest(correct, n, chance)
    interval = test.proportion_ci(confidence_level=0.95, method="exact")
    return {"accuracy": correct / n, "chance": chance, "n_test": n, "ci_low": float(interval.low),
            "ci_high": float(interval.high), "p_value": float(test.pvalue)}


def _flow_images(store: Any, video_id: str, frames: np.ndarray, flow_method: str) -> np.ndarray:
    from kinetoscope.flow import FlowSpec, flow_to_rgb, video_flow

    if store.has_flow(video_id):
        flow = np.asarray(store.read_flow(video_id), dtype=np.float32)[..., :2]
    else:
        flow = video_flow(FlowSpec(method=flow_method), frames)
    return flow_to_rgb(flow)  # one scale per video: its largest magnitude


def probe_images(store: Any, records: list[Any], kind: str, per_video: int, rng: np.random.Generator,
                 flow_method: str = "farneback", flow_store: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``per_video`` random single images per video (frames, or flow images) uint8 ``[N, H, W, C]`` and
    their class indices. Flow comes from ``flow_store`` (default ``store``) when cached there."""
    if kind not in KINDS:
        raise ValueError(f"probe kind {kind!r} is not known; accepted: {', '.join(KINDS)}")
    classes = store.classes
    images, labels = [], []
    for record in records:
        frames = np.asarray(store.read_frames(record.video_id, mmap=False))
        if kind == "flow":
            frames = _flow_images(flow_store or store, record.video_id, frames, flow_method)
        picks = rng.choice(len(frames), size=min(per_video, len(frames)), replace=False)
        images.extend(frames[t] for t in sorted(picks))
        labels.extend([classes.index(record.label)] * len(picks))
    return np.stack(images), np.asarray(labels)


def _load_backbone(model: Any, weights: str | Path) -> None:
    """Load imported weights into ``model`` except a classifier of another size (fine-tuning)."""
    from kinetoscope.models.weights import WeightMismatchError, compare_state, read_safetensors

    state = read_safetensors(weights)  # checked against its recorded sha256 when there is one
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("fc.") and k in expected
                                                     and v.shape != expected[k].shape)}
    missing, unexpected, shapes = compare_state(state, expected, repr)
    missing = [m for m in missing if not m.startswith("'fc.")]
    if missing or unexpected or shapes:
        raise WeightMismatchError(f"{weights} does not fit the probe's 2D ResNet:", missing, unexpected, shapes)
    model.load_state_dict(state, strict=False)


@dataclass
class FrameClassifier:
    """A 2D ResNet trained on single images (:func:`train_frame_classifier`): the network, the per-channel
    normalisation of its training images and its classes."""

    model: Any
    mean: Any
    std: Any
    classes: list[str]

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class indices for uint8 images ``[N, H, W, C]``."""
        import torch

        x = (_to_tensor(images) - self.mean) / self.std
        self.model.eval()
        with torch.no_grad():
            return torch.cat([self.model(x[i:i + batch_size]).argmax(1)
                              for i in range(0, len(x), batch_size)]).numpy()

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        from kinetoscope.models.weights import save_safetensors

        state = {**{f"model.{k}": v for k, v in self.model.state_dict().items()}, "norm.mean": self.mean,
                 "norm.std": self.std}
        save_safetensors(state, path, {"classes": json.dumps(self.classes), **(metadata or {})})

    @classmethod
    def load(cls, path: str | Path, depth: int) -> FrameClassifier:
        from kinetoscope.models.twostream import FrameResNet
        from kinetoscope.models.weights import read_safetensors, safetensors_metadata

        classes = json.loads(safetensors_metadata(path)["classes"])
        state = read_safetensors(path)  # checked against its recorded sha256 when there is one
        model = FrameResNet(depth, num_classes=len(classes), in_channels=3)
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        return cls(model.eval(), state["norm.mean"], state["norm.std"], classes)


def _to_tensor(images: np.ndarray) -> Any:  # uint8 [N, H, W, C] -> float [N, 3, 1, H, W] in [0, 1]
    import torch

    if images.shape[-1] == 1:
        images = np.repeat(images, 3, -1)
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255).permute(0, 3, 1, 2).unsqueeze(2)


def train_frame_classifier(images: np.ndarray, labels: np.ndarray, classes: list[str], *, depth: int = 18,
                           epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
                           weights: str | Path | None = None, seed: int = 0) -> FrameClassifier:
    """Train :class:`kinetoscope.models.twostream.FrameResNet` (``depth``) on single images uint8
    ``[N, H, W, C]`` with Adam, from scratch or from imported ``.safetensors`` ``weights``."""
    import torch
    import torch.nn.functional as F

    from kinetoscope.models.twostream import FrameResNet

    x = _to_tensor(images)
    mean = x.mean(dim=(0, 2, 3, 4), keepdim=True)
    std = x.std(dim=(0, 2, 3, 4), keepdim=True).clamp_min(1e-3)
    x = (x - mean) / std
    y = torch.from_numpy(np.asarray(labels)).long()
    torch.manual_seed(seed)
    model = FrameResNet(depth, num_classes=len(classes), in_channels=3)
    if weights is not None:
        _load_backbone(model, weights)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return FrameClassifier(model.eval(), mean, std, list(classes))


def frame_network_probe(
    root: str | Path,
    *,
    kind: str = "frames",
    depth: int = 18,
    train_split: str = "train",
    test_split: str = "val",
    frames_per_video: int = 4,
    test_frames_per_video: int = 1,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    weights: str | Path | None = None,
    flow_method: str = "farneback",
    flow_root: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The single-frame network probe (Ilic 2024 §4.4) on a dataset; returns :func:`probe_statistics`
    plus ``n_train``, ``classifier``, ``kind`` and ``dataset``.

    One test frame per video by default: frames of one video share content (and, in appearance-free
    videos, their noise), so one per video keeps the binomial test's samples independent. ``flow_root``:
    a dataset whose cached flow belongs to the same videos (e.g. the appearance-free version)."""
    from kinetoscope.data.cache import DatasetStore

    store = DatasetStore(root)
    train, test = store.records(train_split), store.records(test_split)
    if not train or not test:
        splits = sorted({r.split for r in store.records()})
        raise ValueError(f"{store.annotations_path}: split {train_split!r} has {len(train)} videos and "
                         f"{test_split!r} has {len(test)}; both need videos (splits present: {splits})")
    rng = np.random.default_rng(seed)
    flow_store = DatasetStore(flow_root) if flow_root is not None else None
    x_train, y_train = probe_images(store, train, kind, frames_per_video, rng, flow_method, flow_store)
    x_test, y_test = probe_images(store, test, kind, test_frames_per_video, rng, flow_method, flow_store)
    classifier = train_frame_classifier(x_train, y_train, store.classes, depth=depth, epochs=epochs,
                                        batch_size=batch_size, lr=lr, weights=weights, seed=seed)
    return {**probe_statistics(y_test, classifier.predict(x_test)), "n_train": int(len(y_train)), "kind": kind,
            "classifier": f"ResNet-{depth} on single {'flow images' if kind == 'flow' else 'frames'}"
                          + (" (imported weights)" if weights else " (from scratch)"),
            "dataset": str(store.root)}


def inter_class_entropy(confusion: np.ndarray, subset: tuple[int, ...] | list[int]) -> float:
    """Mean row entropy (nats) of the row-normalised confusion restricted to ``subset`` × ``subset``:
    log k when every class of the subset is confused uniformly with the others, 0 when none is."""
    sub = np.asarray(confusion, dtype=np.float64)[np.ix_(subset, subset)]
    rows = sub / np.maximum(sub.sum(1, keepdims=True), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(rows > 0, rows * np.log(rows), 0.0).sum(1)
    return float(entropy.mean())


def select_confusable_subset(confusion: np.ndarray, k: int = 5, min_acc: float = 0.5,
                             max_combinations: int = 200_000) -> list[int]:
    """The AFD5 selection (Ilic 2024 §4.4, steps 3–4): among classes whose accuracy (diagonal of the
    row-normalised confusion) is at least ``min_acc``, the ``k`` with the highest
    :func:`inter_class_entropy`, i.e. the most mutually confused. Exhaustive over the combinations
    when there are at most ``max_combinations``, otherwise greedy (grow from the most confused pair).
    Returns class indices ordered by decreasing diagonal weight (the reordered confusion matrix)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be square [K, K], got {confusion.shape}")
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1e-12)
    accuracy = np.diag(rows)
    eligible = [int(i) for i in np.flatnonzero(accuracy >= min_acc)]
    if len(eligible) < k:
        raise ValueError(f"only {len(eligible)} classes reach accuracy {min_acc}; {k} are needed "
                         f"(accuracies: {np.round(accuracy, 3).tolist()})")
    from math import comb

    if comb(len(eligible), k) <= max_combinations:
        best = max(itertools.combinations(eligible, k), key=lambda s: inter_class_entropy(confusion, s))
    else:
        pairs = itertools.combinations(eligible, 2)
        chosen = list(max(pairs, key=lambda s: inter_class_entropy(confusion, s)))
        while len(chosen) < k:
            rest = [c for c in eligible if c not in chosen]
            chosen.append(max(rest, key=lambda c: inter_class_entropy(confusion, (*chosen, c))))
        best = tuple(chosen)
    return sorted(best, key=lambda i: -accuracy[i])


__all__ = ["KINDS", "FrameClassifier", "frame_network_probe", "inter_class_entropy", "probe_images",
           "probe_statistics", "select_confusable_subset", "train_frame_classifier"]
