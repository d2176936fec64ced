"""``kinetoscope predict RUN VIDEO...``: per-clip and per-video verdicts for new videos, and a timeline.

Broomé 2022 §3.2-3.3. Each video is decoded as the run's training data was prepared
(``dataset.json`` of the run's data: fps, frame size, colour; optical flow with the same method and
rate when the model has a flow stream), cut into dense windows (default: the run's clip length and
stride; Broomé 2022: 10 frames at 2 fps, back-to-back) and scored. Per-frame models give a clip verdict
by majority vote over frames (seeded random tie-break) or the mean. Video verdicts: majority vote,
mean and the top-k% MIL filter (per class the mean of the k = ceil(f * n_clips) highest clip
probabilities, Broomé 2022 §3.3).

Writes into ``out_dir``: ``clip_predictions.csv`` (video, clip, start/end seconds, scores),
``video_predictions.csv`` (one row per video and aggregation) and ``timeline_<video>.png`` — the
score of one class over the video, what a clinician would scan for the seconds that drove a verdict.
A video that cannot be read is skipped and listed with the reason in ``problems.csv``; the others
are still scored (an error only if none can be read).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.utils import atomic_path, atomic_write_text, csv_text

AGGREGATIONS = ("vote", "mean", "topk")
log = logging.getLogger(__name__)


def _run_settings(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """(run config, dataset.json of the data it was trained on)."""
    from kinetoscope.config import RunConfig
    from kinetoscope.data.cache import DatasetStore

    config = RunConfig.load(run_dir)
    store = DatasetStore(config.data.root)
    meta = store.meta() if store.meta_path.is_file() else {}
    return config, meta


def video_flow_like_training(
    path: str | Path, frames: np.ndarray, times: np.ndarray, meta: dict[str, Any], channels: int
) -> np.ndarray:
    """Optical flow of a decoded video ``uint8 [T, H, W, C]`` as ``data prepare`` cached it for the
    run's dataset (``dataset.json`` key ``flow``: method, rate, pairing; default Farnebäck between
    the frames themselves) -> ``float32 [T, H, W, channels]``, one field per frame."""
    from kinetoscope.data.video import decode_video
    from kinetoscope.flow import FlowSpec, video_flow

    setting = meta.get("flow")
    spec = FlowSpec.parse(setting if isinstance(setting, dict | str) else True)
    if spec.fps:
        size = meta.get("size")
        source = decode_video(
            path,
            fps=spec.fps,
            size=tuple(size) if isinstance(size, list) else size,
            grayscale=bool(meta.get("grayscale")),
        )
        flow = video_flow(spec, frames, times, source.frames, source.timestamps)
    else:
        flow = video_flow(spec, frames)
    if flow.shape[-1] < channels:
        flow = np.concatenate([flow, np.sqrt((flow[..., :2] ** 2).sum(-1, keepdims=True))], axis=-1)
    return flow[..., :channels].astype(np.float32)


def predict_videos(
    run_dir: str | Path,
    videos: list[str | Path],
    out_dir: str | Path,
    window: int | None = None,
    stride: int | None = None,
    frame_aggregation: str = "vote",
    top_fraction: float = 0.05,
    timeline_class: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    accelerator: str = "auto",
    render: bool = False,
) -> dict[str, Any]:
    """Score ``videos`` with a trained run; returns ``{video: {aggregation: {pred, scores}}}`` and writes
    the CSVs and timelines of the module docstring. ``window``/``stride`` in frames at the run's fps
    (default: the run's ``data.frames`` / ``data.stride``); ``timeline_class`` defaults to the second
    class (the "pain" of a two-class pain/no-pain run) or the only one. Windows get the run's evaluation
    transform (centre crop, normalisation) and are scored on ``accelerator``. ``render`` also writes
    ``annotated_<video>.mp4`` (``report.video.render_prediction_video``)."""
    import torch

    from kinetoscope.data.datamodule import clip_transform
    from kinetoscope.data.sampling import dense_windows
    from kinetoscope.data.video import VideoError, decode_video
    from kinetoscope.device import resolve_device
    from kinetoscope.evaluate.aggregate import aggregate_videos
    from kinetoscope.models.checkpoint import load_run_model
    from kinetoscope.models.inference import model_inputs
    from kinetoscope.models.pain import clip_scores
    from kinetoscope.utils import progress

    if frame_aggregation not in ("vote", "mean"):  # checked before any decoding (one-output models ignore it)
        raise ValueError(f"frame_aggregation must be 'vote' or 'mean', got {frame_aggregation!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    device = resolve_device(accelerator)
    config, meta = _run_settings(run_dir)
    model, spec = load_run_model(run_dir, device=device)
    classes = spec["classes"]
    window = int(window or config.data.frames or meta.get("frames") or 10)
    stride = int(stride or config.data.stride or window)
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1 frames, got window={window}, stride={stride}")
    focus = timeline_class or classes[min(1, len(classes) - 1)]
    if focus not in classes:
        raise ValueError(f"timeline_class {focus!r} is not one of the run's classes {classes}")
    fps = meta.get("fps")
    size = meta.get("size")
    size = tuple(size) if isinstance(size, list) else size
    streams = getattr(model, "streams", ("rgb",))
    flow_channels = int(getattr(model, "flow_channels", 2))
    generator = torch.Generator().manual_seed(seed)
    model.eval()

    clip_rows: list[list[Any]] = []
    video_rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    used_names: set[str] = set()
    problems: list[list[str]] = []
    transform = clip_transform(config.data, train=False, channels=int(spec["in_channels"]))
    for path in progress(videos, total=len(videos), description="predict"):
        try:  # an unreadable video is recorded and skipped; the others are still scored
            decoded = decode_video(path, fps=fps, size=size, grayscale=bool(meta.get("grayscale")))
            frames, times = decoded.frames, decoded.timestamps
            flow = None
            if "flow" in streams:
                flow = torch.from_numpy(
                    video_flow_like_training(path, frames, times, meta, flow_channels)
                ).permute(3, 0, 1, 2)
        except (VideoError, OSError, ValueError, RuntimeError) as error:
            problems.append([str(path), f"{type(error).__name__}: {error}"])
            log.warning("predict: skipping %s: %s", path, error)
            continue
        rate = float(fps or decoded.info.fps or 1.0)
        windows = dense_windows(len(frames), window, stride, short="pad")
        rgb = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)  # [C, T, H, W]
        scores = []
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                idx = [torch.as_tensor(np.asarray(w)) for w in windows[start : start + batch_size]]
                pairs = [(rgb[:, i], flow[:, i] if flow is not None else None) for i in idx]
                if transform is not None:
                    pairs = [transform(v, f) for v, f in pairs]
                batch = {"video": torch.stack([v for v, _ in pairs]).to(device)}
                if flow is not None:
                    batch["flow"] = torch.stack([f for _, f in pairs]).to(device)
                logits = model(*model_inputs(model, batch))
                scores.append(clip_scores(logits.cpu(), frame_aggregation, generator).numpy())
        scores_arr = np.concatenate(scores).astype(np.float64)
        name = Path(path).stem
        while name in used_names:
            name += "_"
        used_names.add(name)
        for k, (w, s) in enumerate(zip(windows, scores_arr, strict=True)):
            start_s, end_s = float(w[0]) / rate, float(w[-1] + 1) / rate
            clip_rows.append(
                [
                    name,
                    str(path),
                    k,
                    round(start_s, 3),
                    round(end_s, 3),
                    classes[int(s.argmax())],
                    *np.round(s, 6).tolist(),
                ]
            )
        results[name] = {}
        for method in AGGREGATIONS:
            _, agg = aggregate_videos(
                [name] * len(scores_arr), scores_arr, method=method, top_fraction=top_fraction, seed=seed
            )
            verdict = classes[int(agg[0].argmax())]
            results[name][method] = {"pred": verdict, "scores": agg[0].tolist()}
            video_rows.append(
                [name, str(path), len(scores_arr), method, verdict, *np.round(agg[0], 6).tolist()]
            )
        plot_timeline(
            out_dir / f"timeline_{name}.png",
            windows,
            scores_arr[:, classes.index(focus)],
            rate,
            title=f"{name}: {focus} score per {window}-frame clip",
            label=focus,
            verdict=results[name]["vote"]["pred"],
        )
        if render:  # annotated_<video>.mp4: top classes and the score timeline over the video
            from kinetoscope.report.video import render_prediction_video

            spans = [(float(w[0]) / rate, float(w[-1] + 1) / rate) for w in windows]
            render_prediction_video(path, out_dir / f"annotated_{name}.mp4", spans, scores_arr, classes, focus)
    problems_file = out_dir / "problems.csv"
    if problems:
        atomic_write_text(problems_file, csv_text(["path", "problem"], problems))
    elif problems_file.exists():  # a re-run that now reads every video
        problems_file.unlink()
    if not results:
        raise ValueError(f"none of the {len(videos)} video(s) could be read; see {problems_file}")
    score_cols = [f"score_{c}" for c in classes]
    atomic_write_text(
        out_dir / "clip_predictions.csv",
        csv_text(["video", "path", "clip_index", "start_s", "end_s", "pred", *score_cols], clip_rows),
    )
    atomic_write_text(
        out_dir / "video_predictions.csv",
        csv_text(["video", "path", "clips", "aggregation", "pred", *score_cols], video_rows),
    )
    return results


def plot_timeline(
    path: Path,
    windows: list[np.ndarray],
    scores: np.ndarray,
    fps: float,
    title: str = "",
    label: str = "score",
    verdict: str | None = None,
) -> Path:
    """A step plot of one class's clip score over the video's time axis (seconds), 0.5 line dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = np.array([w[0] for w in windows], dtype=np.float64) / fps
    ends = np.array([w[-1] + 1 for w in windows], dtype=np.float64) / fps
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for s, e, v in zip(starts, ends, scores, strict=True):
        ax.hlines(v, s, e, color="#c44e52" if v >= 0.5 else "#4c72b0", linewidth=3)
    centres = (starts + ends) / 2
    ax.plot(centres, scores, color="#555", linewidth=0.8, alpha=0.6)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="time (s)", ylabel=f"P({label})", ylim=(-0.02, 1.02), xlim=(0, max(ends.max(), 1e-3)))
    ax.set_title(title + (f" — verdict (majority): {verdict}" if verdict else ""), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["predict_videos", "plot_timeline", "video_flow_like_training"]
