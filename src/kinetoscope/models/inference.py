"""Running a model over clips: stream routing, per-frame outputs, batched scoring.

Shared by training, evaluation and explanation so every caller feeds models the same way
(docs/architecture.md conventions: ``streams`` says which batch entries a model takes; ``per_frame`` models
return ``[B, T, K]``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

STREAM_KEYS = {"rgb": "video", "flow": "flow"}


def model_inputs(model: nn.Module, batch: dict) -> list[torch.Tensor]:
    """The tensors ``model`` takes, in order, from a batch dict."""
    streams = getattr(model, "streams", ("rgb",))
    inputs = []
    for stream in streams:
        key = STREAM_KEYS.get(stream, stream)
        if key not in batch:
            raise KeyError(
                f"model {type(model).__name__} needs the {stream!r} stream (batch key {key!r}); "
                f"the batch has {sorted(batch)} — prepare the dataset with flow, or pick a one-stream model"
            )
        inputs.append(batch[key])
    return inputs


def clip_logits(logits: torch.Tensor) -> torch.Tensor:
    """Clip-level class scores ``[B, K]`` from ``[B, K]`` or per-frame ``[B, T, K]`` logits.

    Per-frame logits are averaged over time in log-probability space (the mean of per-frame
    log-softmax), which ranks classes like a soft majority vote.
    """
    if logits.ndim == 3:
        return torch.log_softmax(logits, dim=-1).mean(dim=1)
    return logits


@torch.inference_mode()
def predict_batches(model: nn.Module, batches: Iterable[dict]) -> dict[str, np.ndarray | list]:
    """Softmax scores of every clip; returns ``scores [N, K]``, ``labels``, ``video_id``, ``subject``,
    ``clip_index`` (the model is put in eval mode). Batches are moved to the model's device and the
    scores come back to the CPU."""
    from kinetoscope.device import model_device

    model.eval()
    device = model_device(model)
    scores, labels, ids, subjects, clip_idx = [], [], [], [], []
    for batch in batches:
        out = clip_logits(model(*(x.to(device) for x in model_inputs(model, batch))))
        scores.append(torch.softmax(out.float(), dim=-1).cpu().numpy())
        labels.extend(int(v) for v in torch.as_tensor(batch["label"]).tolist())
        ids.extend(batch["video_id"])
        subjects.extend(batch.get("subject", [""] * len(out)))
        clip_idx.extend(int(v) for v in torch.as_tensor(batch.get("clip_index", [0] * len(out))).tolist())
    return {
        "scores": np.concatenate(scores) if scores else np.zeros((0, 0), dtype=np.float32),
        "labels": np.asarray(labels, dtype=np.int64),
        "video_id": ids,
        "subject": subjects,
        "clip_index": np.asarray(clip_idx, dtype=np.int64),
    }
