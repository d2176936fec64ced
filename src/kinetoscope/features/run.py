"""``kinetoscope features``: a feature sequence per video from any layer of a model or trained run.

Every video is cut into dense windows of ``window`` frames starting every ``stride`` frames
(``data.sampling.dense_windows``; a video shorter than one window is padded with its last frame or
skipped, ``short``), each window goes through the model, and the output of ``layer`` is pooled over
space-time (:func:`kinetoscope.features.extract`). This is the clip-feature sequence that multiple-
instance learning over long videos takes (Broomé 2022 §3.3) and the usual input of temporal action
localisation.

Inputs: a prepared dataset (its frame cache, and cached flow for two-stream models) or video files /
folders of videos decoded directly with PyAV (at the run's frame rate and size by default).

Writes into ``out_dir``:
- ``<video_id>.npy`` — float32 ``[num_windows, D]`` (``pool="none"``: ``[num_windows, *map]``)
- ``windows/<video_id>.csv`` — one row per window: index, first/last frame, start/end seconds, padded
- ``windows.csv`` — all of the above in one table (``windows-<i>-of-<n>.csv`` for shard ``i/n``)
- ``features.json`` — the settings; a re-run with other settings into the same directory is refused
- ``problems.csv`` — videos that could not be read or had no window, and why (the rest complete)

Each video is written atomically once all its windows are done, so a killed run resumes where it
stopped: videos whose ``.npy`` exists are skipped. ``shard=(i, n)`` takes every n-th video from the
i-th, for array jobs writing into one directory.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kinetoscope.features import POOLS, default_layer, extract, get_layer
from kinetoscope.utils import atomic_save_npy, atomic_write_json, atomic_write_text, csv_text, progress

log = logging.getLogger(__name__)
WINDOW_COLUMNS = ["video_id", "window", "start_frame", "end_frame", "start_s", "end_s", "padded"]
_SETTING_KEYS = ("model", "layer", "pool", "window", "stride", "short", "fps", "size", "grayscale")


@dataclass
class VideoSource:
    """One video to extract from: its id, a loader of ``(frames uint8 [T,H,W,C], flow or None, fps)``."""

    video_id: str
    origin: str
    load: Any


def load_model_source(source: str | Path, *, num_classes: int = 400, in_channels: int = 3,
                      options: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Any, str]:
    """``(model, run config or None, description)`` from a run directory or a registered model name."""
    from kinetoscope.config import RunConfig
    from kinetoscope.models import create_model, list_models
    from kinetoscope.models.checkpoint import load_run_model

    path = Path(source)
    if (path / "model.json").is_file():
        model, spec = load_run_model(path)
        return model, RunConfig.load(path), f"run {path}"
    if str(source) in list_models():
        torch.manual_seed(0)
        return create_model(str(source), num_classes, in_channels, **(options or {})), None, f"model {source}"
    raise ValueError(f"{source!r} is neither a finished run directory (with model.json) nor a registered "
                     f"model; models: {', '.join(list_models())}")


def _dataset_sources(root: Path, split: str | None, flow: bool) -> tuple[list[VideoSource], dict[str, Any]]:
    from kinetoscope.data.cache import DatasetStore

    store = DatasetStore(root)
    meta = store.meta()

    def loader(video_id: str, fps: float):
        def load():
            frames = store.read_frames(video_id)
            flow_array = store.read_flow(video_id) if flow else None
            return frames, flow_array, fps

        return load

    records = store.records(split)
    if not records:
        raise ValueError(f"no videos in {store.annotations_path}" + (f" with split {split!r}" if split else ""))
    rate = meta.get("fps")  # resampled to one rate, or each video at its own (records' fps)
    return [VideoSource(r.video_id, str(store.frames_path(r.video_id)),
                        loader(r.video_id, float(rate or r.fps or 1.0))) for r in records], meta


def _file_sources(paths: list[Path], fps: float | None, size: Any, grayscale: bool) -> list[VideoSource]:
    from kinetoscope.data.cache import safe_id
    from kinetoscope.data.video import VIDEO_EXTENSIONS, decode_video, is_frame_folder

    files: list[Path] = []
    for path in paths:
        if path.is_dir() and not is_frame_folder(path):
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{path} holds no videos ({', '.join(VIDEO_EXTENSIONS)}) and no dataset.json")
            files.extend(found)
        else:
            files.append(path)

    def loader(path: Path):
        def load():
            decoded = decode_video(path, fps=fps, size=size, grayscale=grayscale)
            return decoded.frames, None, float(fps or decoded.info.fps or 1.0)

        return load

    sources, used = [], set()
    for path in files:
        video_id = safe_id(path.stem)
        while video_id in used:
            video_id += "_"
        used.add(video_id)
        sources.append(VideoSource(video_id, str(path), loader(path)))
    return sources


def _check_settings(path: Path, settings: dict[str, Any], overwrite: bool) -> None:
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        changed = [k for k in _SETTING_KEYS if old.get(k) != settings.get(k)]
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(f"{path.parent} holds features made with other settings ({detail}); "
                             "use another --out or --overwrite")
    atomic_write_json(path, settings)


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))[1:]


def _clip(frames: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(3, 0, 1, 2).float().div_(255.0)


def _flow_clip(flow: np.ndarray, idx: np.ndarray, channels: int) -> torch.Tensor:
    fidx = np.minimum(idx, flow.shape[0] - 1)
    return torch.from_numpy(np.ascontiguousarray(flow[fidx][..., :channels], dtype=np.float32)).permute(3, 0, 1, 2)


def extract_features(
    source: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    layer: str | None = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    pool: str = "mean",
    short: str | None = None,
    split: str | None = None,
    shard: tuple[int, int] | str | None = None,
    batch_size: int = 16,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
    num_classes: int = 400,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Features of every video of ``inputs`` (one dataset directory, or video files and folders) from
    ``source`` (a run directory or a registered model name); returns counts and paths (module docstring).

    Defaults: ``layer`` the model's ``explain_layer``; ``window`` the run's ``data.frames`` (else the
    dataset's ``frames``, else 16); ``stride`` = ``window``; ``short`` the run's ``data.short`` (else
    ``"pad"``); direct decoding at the run's dataset ``fps``/``size``/``grayscale``.
    """
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.datamodule import clip_transform
    from kinetoscope.data.prepare import parse_shard
    from kinetoscope.data.sampling import SHORT_POLICIES, dense_windows
    from kinetoscope.data.video import VideoError

    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}; expected one of {POOLS}")
    shard = parse_shard(shard)
    out_dir = Path(out_dir)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no videos given: pass a prepared dataset directory or video files")
    dataset_root = paths[0] if len(paths) == 1 and DatasetStore(paths[0]).meta_path.is_file() else None
    data_meta = DatasetStore(dataset_root).meta() if dataset_root else {}

    run_meta: dict[str, Any] = {}
    in_channels = int(data_meta.get("channels") or (1 if grayscale else 3))
    model, config, description = load_model_source(source, num_classes=num_classes, in_channels=in_channels,
                                                   options=options)
    data_config = config.data.model_dump() if config else {}
    # the run's deterministic evaluation transform (resize + centre crop, normalisation), as evaluate uses
    transform = clip_transform(config.data, train=False, channels=in_channels) if config else None
    if config and dataset_root is None:  # decode new videos the way the run's data was prepared
        run_store = DatasetStore(data_config["root"])
        run_meta = run_store.meta() if run_store.meta_path.is_file() else {}
    layer = layer or default_layer(model)
    get_layer(model, layer)  # an unknown layer fails before any video is read
    window = int(window or data_config.get("frames") or data_meta.get("frames") or 16)
    stride = int(stride or window)
    short = short or data_config.get("short") or "pad"
    if short not in SHORT_POLICIES:
        raise ValueError(f"short={short!r}; expected one of {SHORT_POLICIES}")
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1 frames, got window={window}, stride={stride}")
    streams = tuple(getattr(model, "streams", ("rgb",)))
    needs_flow = "flow" in streams
    flow_channels = int(getattr(model, "flow_channels", 2))

    if dataset_root is not None:
        sources, _ = _dataset_sources(dataset_root, split, needs_flow)
        decode = {"fps": data_meta.get("fps"), "size": data_meta.get("size"), "grayscale": data_meta.get("grayscale")}
    else:
        if needs_flow:
            raise ValueError(f"{description} takes optical flow: prepare the videos with "
                             "`kinetoscope data prepare --flow ...` and pass the dataset directory")
        if split:
            raise ValueError("--split applies to a prepared dataset directory, not to video files")
        size_setting = size if size is not None else run_meta.get("size")
        decode = {"fps": fps if fps is not None else run_meta.get("fps"),
                  "size": tuple(size_setting) if isinstance(size_setting, list) else size_setting,
                  "grayscale": bool(grayscale if grayscale is not None else run_meta.get("grayscale", False))}
        sources = _file_sources(paths, decode["fps"], decode["size"], decode["grayscale"])
    if shard is not None:
        sources = sources[shard[0] :: shard[1]]

    settings = {"model": description, "layer": layer, "pool": pool, "window": window, "stride": stride,
                "short": short, "fps": decode["fps"], "size": list(decode["size"]) if isinstance(
                    decode["size"], tuple) else decode["size"], "grayscale": decode["grayscale"],
                "inputs": [str(p) for p in paths]}
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir / "features.json", settings, overwrite)

    todo = [s for s in sources if overwrite or not (out_dir / f"{s.video_id}.npy").is_file()]
    problems: list[list[str]] = []
    written = 0
    pending: list[tuple[str, int, list[torch.Tensor]]] = []
    buffers: dict[str, list[np.ndarray | None]] = {}
    rows: dict[str, list[list[Any]]] = {}

    def finish(video_id: str) -> None:
        nonlocal written
        atomic_write_text(out_dir / "windows" / f"{video_id}.csv", csv_text(WINDOW_COLUMNS, rows.pop(video_id)))
        atomic_save_npy(out_dir / f"{video_id}.npy", np.stack(buffers.pop(video_id)).astype(np.float32))
        written += 1

    def flush() -> None:
        if not pending:
            return
        batch = [torch.stack([item[2][s] for item in pending]) for s in range(len(streams))]
        feats = extract(model, batch if len(batch) > 1 else batch[0], layer, pool).cpu().numpy()
        done = []
        for (video_id, k, _), feat in zip(pending, feats, strict=True):
            slots = buffers[video_id]
            slots[k] = feat
            if k == len(slots) - 1:
                done.append(video_id)
        pending.clear()
        for video_id in done:  # windows of a video are queued in order: its last one closes it
            finish(video_id)

    def plan(item: VideoSource) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
        frames, flow, rate = item.load()
        wins = dense_windows(len(frames), window, stride, short=short)
        if not wins:
            raise ValueError(f"{len(frames)} frames, shorter than the {window}-frame window (short='skip')")
        padded = len(frames) < window
        rows[item.video_id] = [[item.video_id, k, int(w[0]), int(w[-1]), round(float(w[0]) / rate, 4),
                                round(float(w[-1] + 1) / rate, 4), int(padded)] for k, w in enumerate(wins)]
        buffers[item.video_id] = [None] * len(wins)
        return frames, flow, wins

    for item in progress(todo, description="features"):
        try:
            frames, flow, wins = plan(item)
        except (VideoError, OSError, ValueError, RuntimeError) as error:
            problems.append([item.origin, f"{type(error).__name__}: {error}"])
            log.warning("features: skipping %s: %s", item.origin, error)
            continue
        for k, w in enumerate(wins):  # clips are cut lazily: a long video never sits in memory as floats
            video = _clip(frames, w)
            flow_clip = _flow_clip(flow, w, flow_channels) if flow is not None else None
            if transform is not None:
                video, flow_clip = transform(video, flow_clip)
            clip = [video] if flow_clip is None else [video, flow_clip]
            pending.append((item.video_id, k, clip))
            if len(pending) >= batch_size:
                flush()
    flush()

    suffix = "" if shard is None else f"-{shard[0]}-of-{shard[1]}"
    table: list[list[str]] = []
    for item in sources:
        sidecar = out_dir / "windows" / f"{item.video_id}.csv"
        if sidecar.is_file() and (out_dir / f"{item.video_id}.npy").is_file():
            table.extend(_read_rows(sidecar))
    atomic_write_text(out_dir / f"windows{suffix}.csv", csv_text(WINDOW_COLUMNS, table))
    problems_file = out_dir / f"problems{suffix}.csv"
    if problems:
        atomic_write_text(problems_file, csv_text(["path", "problem"], problems))
    elif problems_file.exists():
        problems_file.unlink()
    if problems and len(problems) == len(todo) and todo:
        raise ValueError(f"none of the {len(todo)} video(s) could be used; see {problems_file}")
    return {"out_dir": str(out_dir), "videos": len(sources), "written": written,
            "skipped_done": len(sources) - len(todo), "problems": len(problems), "layer": layer,
            "windows": len(table)}


def layer_table(name: str, input_shape: tuple[int, int, int, int], num_classes: int = 400):
    """A ``rich.table.Table`` of every named layer of model ``name`` with its output shape for one clip
    ``(C, T, H, W)`` (one CPU forward); the layer the features default to is marked."""
    from rich.table import Table

    from kinetoscope.features import layer_shapes
    from kinetoscope.models.profile import build_for_input, example_inputs

    model = build_for_input(name, input_shape, num_classes, {}, "cpu")
    marked = getattr(model, "explain_layer", None)
    table = Table(title=f"{name} layers, input {'x'.join(map(str, input_shape))} (features --layer NAME)")
    for column in ("layer", "type", "output shape"):
        table.add_column(column)
    for layer, kind, shape in layer_shapes(model, example_inputs(model, input_shape)):
        shown = "x".join(map(str, shape)) if shape else "(not run)"
        table.add_row(layer + (" (default)" if layer == marked else ""), kind, shown)
    return table


__all__ = ["extract_features", "layer_table", "load_model_source"]
