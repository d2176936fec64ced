"""``data prepare`` and ``data inspect``: decode every video once into the frame cache.

The pain pipeline extracts frames at 2 fps before anything else (Broomé 2022 §3.1); the benchmark
pipelines rescale frames to a short side (Feichtenhofer 2017 Ch. 3). ``prepare_dataset`` does both for any
annotation format and writes the :class:`~kinetoscope.data.cache.DatasetStore` layout::

    <out>/dataset.json, annotations.csv, problems.csv, frames/<id>.npy   (see data/cache.py)
    <out>/.prepare/meta/<id>.json       per-video facts (source fps, duration, ...), written before
                                         the frames; the frames file is the "done" marker
    <out>/.prepare/problems/<id>.json   why a video failed (retried on the next run)

Safety: every file is written to a temporary name and renamed, so ``kill -9`` leaves whole files
only; a re-run removes leftover temporaries and skips every video whose frames exist. A full disk
stops the job cleanly: the index is rewritten with every finished video, and the error names the
video it stopped at; freeing space and running the same command again carries on from there. Sharding
(``shard=(i, n)``) takes every n-th video of the id-sorted list, so n array jobs can share one output
folder; each job rewrites the index from everything present when it ends, so the last to finish
leaves the complete index.
"""

from __future__ import annotations

import errno
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from kinetoscope.data.annotations import class_names, declared_classes, distinct_video_ids, load_annotations
from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.index import VideoRecord
from kinetoscope.data.video import DEFAULT_FOLDER_FPS, Size, VideoError, decode_video
from kinetoscope.utils import atomic_write_json, progress

if TYPE_CHECKING:
    from kinetoscope.flow import FlowSpec

STALE_TEMP_SECONDS = 600.0
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # prepare stops cleanly at these, keeping every finished video
# False/None: no flow; True, a method name ("farneback" | "tvl1" | "dis"), a dict of FlowSpec fields or a
# kinetoscope.flow.FlowSpec: flow computed by kinetoscope.flow (one field per cached frame, see flow/cache.py);
# or a function uint8 [T,H,W,C] -> float [T',H,W,2|3].
FlowOption = Union[bool, str, dict[str, Any], "FlowSpec", Callable[[np.ndarray], np.ndarray], None]


@dataclass
class PrepareSummary:
    """What a ``prepare_dataset`` run did. ``written`` + ``skipped`` + ``failed`` = videos of this shard."""

    out_dir: str
    videos: int
    written: int
    skipped: int
    failed: int
    annotation_problems: int
    cached_total: int
    classes: list[str]
    shard: tuple[int, int] | None
    seconds: float
    problems: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        shard = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        return (
            f"{self.out_dir}{shard}: {self.written} videos cached, {self.skipped} already done, "
            f"{self.failed} failed, {self.annotation_problems} annotation problems; {self.cached_total} "
            f"videos in the index, {len(self.classes)} classes; {self.seconds:.1f} s"
            + (f"; see {self.out_dir}/problems.csv" if self.problems else "")
        )

    def __rich__(self) -> str:
        return str(self)


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based i) -> ``(i, n)``; errors name the value and the accepted form."""
    if text is None or isinstance(text, tuple):
        shard = text
    else:
        try:
            i, n = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' with 0 <= i < n (e.g. 0/4), got {text!r}") from None
        shard = (i, n)
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard (i, n) needs 0 <= i < n, got {shard}")
    return shard


def _settings(fps: float | None, size: Size, grayscale: bool, folder_fps: float) -> dict[str, Any]:
    return {
        "fps": fps,
        "size": list(size) if isinstance(size, tuple | list) else size,
        "grayscale": bool(grayscale),
        "folder_fps": folder_fps,
    }


def _remove_temporaries(root: Path, sharded: bool) -> int:
    """Delete ``.<name>.*.tmp`` files a killed run left. With shards only old ones (another job may be
    writing right now)."""
    removed = 0
    now = time.time()
    for folder in (
        root,
        root / "frames",
        root / "flow",
        root / ".prepare" / "meta",
        root / ".prepare" / "problems",
    ):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            try:
                if not sharded or now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


def _resolve_flow(flow: FlowOption) -> Any:
    """None, the user's function, or a ``kinetoscope.flow.FlowSpec`` (errors name a bad method/option)."""
    if flow is False or flow is None:
        return None
    if callable(flow):
        return flow
    try:
        from kinetoscope.flow import FlowSpec  # sideways import, only when flow is asked for
    except ImportError as exc:
        raise RuntimeError(f"flow={flow!r} needs kinetoscope.flow, which is not available ({exc})") from exc
    return FlowSpec.parse(flow)


def _video_flow(
    record: VideoRecord, frames: np.ndarray, flow_fn: Any, fps: float | None, folder_fps: float
) -> np.ndarray:
    """Flow for one video's cached frames: the user's function, or one field per frame from a FlowSpec,
    computed on the video decoded again at ``spec.fps`` when set (Broomé 2022: 16 fps for 2 fps frames)."""
    if callable(flow_fn):
        return flow_fn(frames)
    from kinetoscope.flow import video_flow

    if not flow_fn.fps:
        return video_flow(flow_fn, frames)
    high = decode_video(
        record.path,
        fps=flow_fn.fps,
        size=tuple(frames.shape[1:3]),
        grayscale=True,
        start=record.start,
        end=record.end,
        folder_fps=folder_fps,
    )
    frame_times = float(record.start or 0.0) + np.arange(frames.shape[0]) / float(fps)  # decode_video's grid
    return video_flow(flow_fn, frames, frame_times, high.frames, high.timestamps)


def _flow_meta(flow_spec: Any, fps: float | None) -> dict[str, Any] | None:
    """The flow settings recorded in dataset.json (a re-run with other settings is refused)."""
    if flow_spec is None:
        return None
    if callable(flow_spec):
        return {"method": getattr(flow_spec, "__name__", "custom")}
    if flow_spec.fps and not fps:
        raise ValueError(
            f"flow fps {flow_spec.fps} needs a fixed frame rate for the cached frames (fps=...), got fps={fps}"
        )
    return flow_spec.as_dict()


def prepare_one(
    record: VideoRecord,
    out_dir: str,
    fps: float | None,
    size: Size,
    grayscale: bool,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    flow: FlowOption = False,
) -> dict[str, Any]:
    """Decode one video into the cache (meta first, frames last); return a small status dict.

    Runs in worker processes, so it returns no arrays."""
    root = Path(out_dir)
    store = DatasetStore(root)
    problem_file = root / ".prepare" / "problems" / f"{record.video_id}.json"
    flow_fn = _resolve_flow(flow)
    if store.has_frames(record.video_id):  # cached by an earlier run; only its flow is missing
        if flow_fn is not None and not store.has_flow(record.video_id):
            try:
                frames = store.read_frames(record.video_id, mmap=False)
                store.write_flow(record.video_id, _video_flow(record, frames, flow_fn, fps, folder_fps))
            except VideoError as exc:  # the frames stay cached; problems.csv says why the flow is missing
                problem = f"flow: {exc.reason}"
                atomic_write_json(problem_file, {"path": record.path, "video_id": record.video_id, "problem": problem})
                return {"video_id": record.video_id, "ok": False, "problem": problem}
            problem_file.unlink(missing_ok=True)
        return {"video_id": record.video_id, "ok": True, "problem": ""}
    try:
        decoded = decode_video(
            record.path,
            fps=fps,
            size=size,
            grayscale=grayscale,
            start=record.start,
            end=record.end,
            folder_fps=folder_fps,
        )
    except VideoError as exc:
        atomic_write_json(
            problem_file, {"path": record.path, "video_id": record.video_id, "problem": exc.reason}
        )
        return {"video_id": record.video_id, "ok": False, "problem": exc.reason}
    frames = decoded.frames
    seconds = (
        frames.shape[0] / fps
        if fps
        else (float(decoded.timestamps[-1] - decoded.timestamps[0]) + 1.0 / max(decoded.info.fps, 1e-9))
    )
    meta = {
        "video_id": record.video_id,
        "path": record.path,
        "fps": float(fps or decoded.info.fps),
        "num_frames": int(frames.shape[0]),
        "duration": round(seconds, 6),
        "source_fps": decoded.info.fps,
        "source_frames": decoded.info.frames,
        "source_size": list(decoded.info.size),
        "codec": decoded.info.codec,
        "frame_size": list(frames.shape[1:3]),
    }
    atomic_write_json(root / ".prepare" / "meta" / f"{record.video_id}.json", meta)
    if flow_fn is not None and not store.has_flow(record.video_id):
        try:
            flow_array = _video_flow(record, frames, flow_fn, fps, folder_fps)
        except VideoError as exc:
            atomic_write_json(
                problem_file, {"path": record.path, "video_id": record.video_id, "problem": f"flow: {exc.reason}"}
            )
            return {"video_id": record.video_id, "ok": False, "problem": f"flow: {exc.reason}"}
        store.write_flow(record.video_id, flow_array)
    store.write_frames(record.video_id, frames)  # the "done" marker: written last
    if problem_file.exists():
        problem_file.unlink()
    return {"video_id": record.video_id, "ok": True, "problem": ""}


def _cached_meta(store: DatasetStore, record: VideoRecord) -> dict[str, Any]:
    path = store.root / ".prepare" / "meta" / f"{record.video_id}.json"
    if path.is_file():
        return json.loads(path.read_text())
    array = store.read_frames(record.video_id)  # header only (memory-mapped)
    meta_fps = store.meta().get("fps") or 0.0
    return {
        "fps": meta_fps,
        "num_frames": int(array.shape[0]),
        "duration": array.shape[0] / meta_fps if meta_fps else 0.0,
    }


def _finalise(
    store: DatasetStore,
    records: list[VideoRecord],
    classes: list[str],
    annotation_problems: list[tuple[str, str]],
    meta: dict[str, Any],
) -> tuple[int, list[tuple[str, str]]]:
    """Rewrite annotations.csv, problems.csv and dataset.json from what is on disk now."""
    done, problems = [], list(annotation_problems)
    for r in records:
        cached = store.has_frames(r.video_id)
        pfile = store.root / ".prepare" / "problems" / f"{r.video_id}.json"
        if pfile.is_file():  # a failed decode, or a failed flow of cached frames (stale files are ignored)
            problem = json.loads(pfile.read_text())["problem"]
            if not cached or (problem.startswith("flow:") and not store.has_flow(r.video_id)):
                problems.append((r.path, problem))
        if cached:
            m = _cached_meta(store, r)
            done.append(
                VideoRecord(
                    **{
                        **r.__dict__,
                        "fps": float(m["fps"]),
                        "num_frames": int(m["num_frames"]),
                        "duration": float(m["duration"]),
                    }
                )
            )
    store.write_records(done)
    store.write_problems(problems)
    counts = Counter(r.label for r in done)
    store.write_meta(
        {
            **meta,
            "classes": classes,
            "num_videos": len(done),
            "videos_per_class": {c: counts.get(c, 0) for c in classes},
            "num_problems": len(problems),
        }
    )
    return len(done), problems


def _keep_cached_ids(store: DatasetStore, records: list[VideoRecord]) -> list[VideoRecord]:
    """Videos this cache already lists keep the ids it gave them (caches made before ids were
    transliterated and disambiguated stay valid); a new video whose id one of those holds gets a
    hash suffix (``distinct_video_ids``)."""
    if not store.annotations_path.is_file():
        return records
    cached = {(r.path, r.start, r.end): r.video_id for r in store.records()}
    kept = [(r.path, r.start, r.end) in cached for r in records]
    records = [replace(r, video_id=cached[(r.path, r.start, r.end)]) if k else r
               for r, k in zip(records, kept, strict=True)]
    keys = [f"{r.path}#{r.start}-{r.end}" for r in records]
    return distinct_video_ids(records, keys, kept)


def _stop_at_full_disk(
    store: DatasetStore,
    records: list[VideoRecord],
    classes: list[str],
    annotation_problems: list[tuple[str, str]],
    meta: dict[str, Any],
    record: VideoRecord,
    exc: OSError,
) -> None:
    """Keep what is finished (the index lists every cached video, when the disk still takes it) and
    raise ``exc`` naming the video it stopped at; a re-run after freeing space carries on from there."""
    try:
        cached, _ = _finalise(store, records, classes, annotation_problems, meta)
        kept = f"{cached} videos cached and kept"
    except OSError as again:
        if again.errno not in DISK_FULL:
            raise
        kept = "the videos cached so far are kept (the index is rewritten by the next run)"
    exc.add_note(f"stopped at video {record.path} ({record.video_id}); {kept}")
    raise exc


def prepare_dataset(
    source: str | Path,
    out_dir: str | Path,
    annotations: str | Path | None = None,
    format: str = "csv",
    fps: float | None = None,
    size: Size = None,
    grayscale: bool = False,
    workers: int = 0,
    shard: tuple[int, int] | str | None = None,
    flow: FlowOption = False,
    classes: Sequence[str] | None = None,
    split: int | str | None = None,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    name: str | None = None,
) -> PrepareSummary:
    """Index, decode, resample and cache the videos of ``source`` into ``out_dir``.

    ``format``: csv | folders | ucf101 | hmdb51 | ssv2 | kth (see ``data/annotations.py``);
    ``annotations``: the file or folder that format needs. ``fps``: target frame rate (Broomé 2022: 2),
    ``None`` keeps the source rate. ``size``: shorter side (int) or ``(h, w)``. ``workers``: processes
    (0 = in this process). ``shard``: ``(i, n)`` or ``"i/n"``. ``flow``: ``True`` (Farnebäck), a method
    name (``"farneback" | "tvl1" | "dis"``), a dict of ``kinetoscope.flow.FlowSpec`` fields (``method,
    fps, pair, magnitude, options``; e.g. ``{"method": "farneback", "fps": 16, "magnitude": True}`` is
    Broomé 2022) or a FlowSpec: caches ``flow/<id>.npy`` with one field per frame, also for videos whose
    frames an earlier run cached (skipping those with flow); or a function ``uint8 [T,H,W,C] -> float
    [T',H,W,2|3]``. Returns a :class:`PrepareSummary`; unusable inputs are listed in ``problems.csv``,
    never silently dropped.
    """
    started = time.perf_counter()
    shard = parse_shard(shard)
    if isinstance(size, list):
        size = tuple(size)  # type: ignore[assignment]
    store = DatasetStore(out_dir)
    settings = _settings(fps, size, grayscale, folder_fps)
    flow_spec = _resolve_flow(flow)
    flow_meta = _flow_meta(flow_spec, fps)
    previous_flow = None
    if store.meta_path.is_file():
        previous = {k: store.meta().get(k) for k in settings}
        if previous != settings:
            raise ValueError(
                f"{out_dir} was prepared with {previous}, this run asks for {settings}; "
                "use another output folder (or delete this one) to change fps, size or colour"
            )
        previous_flow = store.meta().get("flow")
        has_flow = (store.root / "flow").is_dir() and any((store.root / "flow").glob("*.npy"))
        if flow_meta is not None and previous_flow is not None and previous_flow != flow_meta and has_flow:
            raise ValueError(
                f"{out_dir}/flow was computed with {previous_flow}, this run asks for {flow_meta}; "
                "delete the flow folder to recompute it with other settings"
            )
    annotation_problems: list[tuple[str, str]] = []
    records = load_annotations(
        source, annotations, format=format, classes=classes, split=split, problems=annotation_problems
    )
    declared = (
        classes
        if classes is not None
        else declared_classes(format, annotations if annotations is not None or format != "ssv2" else source)
    )
    class_list = class_names(records, declared)
    records = sorted(_keep_cached_ids(store, records), key=lambda r: r.video_id)
    mine = records[shard[0] :: shard[1]] if shard else records

    meta = {
        "name": name or Path(out_dir).name,
        "source": str(source),
        "format": format,
        **settings,
        "channels": 1 if grayscale else 3,
        "created_by": "kinetoscope data prepare",
    }
    if flow_meta is not None or previous_flow is not None:
        meta["flow"] = flow_meta if flow_meta is not None else previous_flow
    if not store.meta_path.is_file():
        store.write_meta({**meta, "classes": class_list, "num_videos": 0})
    _remove_temporaries(store.root, sharded=shard is not None)

    todo = [
        r
        for r in mine
        if not store.has_frames(r.video_id) or (flow_spec is not None and not store.has_flow(r.video_id))
    ]
    skipped = len(mine) - len(todo)
    args = (str(store.root), fps, size, grayscale, folder_fps, flow_spec)
    results: list[dict[str, Any]] = []
    label = f"prepare {len(todo)} videos" + (f" (shard {shard[0]}/{shard[1]})" if shard else "")
    full: tuple[VideoRecord, OSError] | None = None  # the disk filled up while caching this video
    if workers and workers > 0 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(prepare_one, r, *args): r for r in todo}
            for fut in progress(as_completed(futures), total=len(futures), description=label):
                try:
                    results.append(fut.result())
                except OSError as exc:
                    if exc.errno not in DISK_FULL:
                        raise
                    full = (futures[fut], exc)
                    pool.shutdown(wait=True, cancel_futures=True)  # videos already running still finish
                    break
    else:
        for r in progress(todo, total=len(todo), description=label):
            try:
                results.append(prepare_one(r, *args))
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                full = (r, exc)
                break

    if full is not None:
        _stop_at_full_disk(store, records, class_list, annotation_problems, meta, *full)
    cached_total, problems = _finalise(store, records, class_list, annotation_problems, meta)
    failed = sum(not r["ok"] for r in results)
    return PrepareSummary(
        out_dir=str(out_dir),
        videos=len(mine),
        written=len(results) - failed,
        skipped=skipped,
        failed=failed,
        annotation_problems=len(annotation_problems),
        cached_total=cached_total,
        classes=class_list,
        shard=shard,
        seconds=round(time.perf_counter() - started, 3),
        problems=problems,
    )


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "total": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "count": int(arr.size),
        "total": float(arr.sum()),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def inspect_dataset(root: str | Path) -> dict[str, Any]:
    """Counts per class, subject, split and class x subject; durations and frame counts per class;
    the problems found. Works on any DatasetStore (prepared or generated)."""
    store = DatasetStore(root)
    meta = store.meta()
    records = store.records()
    classes = list(meta.get("classes") or sorted({r.label for r in records}))
    per_class = Counter(r.label for r in records)
    per_subject = Counter(r.subject or "(none)" for r in records)
    per_split = Counter(r.split or "(none)" for r in records)
    class_subject: dict[str, dict[str, int]] = {}
    for r in records:
        row = class_subject.setdefault(r.subject or "(none)", {c: 0 for c in classes})
        row[r.label] = row.get(r.label, 0) + 1
    missing = [r.video_id for r in records if not store.has_frames(r.video_id)]
    return {
        "root": str(store.root),
        "name": meta.get("name", store.root.name),
        "fps": meta.get("fps"),
        "size": meta.get("size"),
        "channels": meta.get("channels"),
        "classes": classes,
        "num_videos": len(records),
        "per_class": {c: per_class.get(c, 0) for c in classes},
        "per_subject": dict(sorted(per_subject.items())),
        "per_split": dict(sorted(per_split.items())),
        "class_by_subject": dict(sorted(class_subject.items())),
        "duration": {c: _stats([r.duration for r in records if r.label == c]) for c in classes}
        | {"all": _stats([r.duration for r in records])},
        "frames": {c: _stats([float(r.num_frames) for r in records if r.label == c]) for c in classes}
        | {"all": _stats([float(r.num_frames) for r in records])},
        "flow": sum(store.has_flow(r.video_id) for r in records),
        "missing_frames": missing,
        "problems": store.problems(),
    }


def render_inspection(info: dict[str, Any], console: Any = None) -> Any:
    """:func:`inspect_dataset` output as a Rich renderable (a group of tables); printed on ``console``
    when one is given. ``Console().print(render_inspection(info))`` shows it."""
    from rich.console import Group
    from rich.table import Table

    parts: list[Any] = []
    parts.append(
        f"[bold]{info['name']}[/bold]  {info['root']}  videos={info['num_videos']} "
        f"fps={info['fps']} size={info['size']} channels={info['channels']} with flow={info['flow']}"
    )
    table = Table(title="per class")
    for col in ("class", "videos", "frames mean", "duration total (s)", "duration mean", "min", "max"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in info["classes"] + ["all"]:
        d, f = info["duration"][c], info["frames"][c]
        n = info["per_class"].get(c, info["num_videos"]) if c != "all" else info["num_videos"]
        table.add_row(
            c,
            str(n),
            f"{f['mean']:.1f}",
            f"{d['total']:.1f}",
            f"{d['mean']:.2f}",
            f"{d['min']:.2f}",
            f"{d['max']:.2f}",
        )
    parts.append(table)
    if len(info["class_by_subject"]) > 1 or "(none)" not in info["class_by_subject"]:
        table = Table(title="videos per subject and class")
        table.add_column("subject")
        for c in info["classes"]:
            table.add_column(c, justify="right")
        table.add_column("total", justify="right")
        for subject, row in info["class_by_subject"].items():
            table.add_row(subject, *[str(row.get(c, 0)) for c in info["classes"]], str(sum(row.values())))
        parts.append(table)
    table = Table(title="per split")
    table.add_column("split")
    table.add_column("videos", justify="right")
    for split, n in info["per_split"].items():
        table.add_row(split, str(n))
    parts.append(table)
    if info["problems"] or info["missing_frames"]:
        table = Table(title=f"problems ({len(info['problems'])})")
        table.add_column("path")
        table.add_column("problem")
        for path, problem in info["problems"]:
            table.add_row(path, problem)
        for vid in info["missing_frames"]:
            table.add_row(vid, "listed in annotations.csv but frames/<id>.npy is missing")
        parts.append(table)
    else:
        parts.append("no problems")
    group = Group(*parts)
    if console is not None:
        console.print(group)
    return group
