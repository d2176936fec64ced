"""``prepare_dataset(..., flow=...)``: flow cached one field per frame, at a chosen rate (Broomé 2022: 16
fps flow matched to 2 fps RGB), added to an existing cache and resumable."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.prepare import prepare_dataset
from kinetoscope.flow import smooth_texture

SIZE, MARGIN = 64, 12


def _frame_folder(folder: Path, shifts: list[tuple[float, float]], seed: int) -> None:
    """PNG frames (lossless) of a texture whose step j -> j+1 moves by shifts[j]."""
    pad = 48
    base = smooth_texture(SIZE + 2 * pad, SIZE + 2 * pad, seed=seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    folder.mkdir(parents=True)
    for j, (dx, dy) in enumerate(np.cumsum([(0.0, 0.0), *shifts], axis=0)):
        map_x, map_y = (xs - dx + pad).astype(np.float32), (ys - dy + pad).astype(np.float32)
        image = cv2.remap(base, map_x, map_y, cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{j:04d}.png"), np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Two 2-second frame folders at 16 fps: the step leaving every 8th frame moves right by 2 px, every
    other step down by 1 px; so at 2 fps consecutive RGB frames are 2 px right and 7 px down apart."""
    shifts = [(2.0, 0.0) if j % 8 == 0 else (0.0, 1.0) for j in range(31)]
    for name, seed in (("a", 0), ("b", 1)):
        _frame_folder(tmp_path / "src" / name, shifts, seed)
    (tmp_path / "src" / "videos.csv").write_text("path,label,subject\na,left,1\nb,right,2\n")
    return tmp_path / "src"


def test_flow_at_16fps_is_matched_to_2fps_frames(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = prepare_dataset(
        source,
        out,
        annotations=source / "videos.csv",
        fps=2,
        folder_fps=16,
        flow={"method": "farneback", "fps": 16, "magnitude": True},
    )
    assert summary.written == 2 and summary.failed == 0
    store = DatasetStore(out)
    assert store.meta()["flow"] == {
        "method": "farneback",
        "fps": 16,
        "pair": "forward",
        "magnitude": True,
        "options": {},
    }
    for video_id in ("a", "b"):
        frames, flow = store.read_frames(video_id), store.read_flow(video_id)
        assert frames.shape[0] == 4 and flow.shape == (4, SIZE, SIZE, 3) and flow.dtype == np.float16
        inner = np.asarray(flow[:, MARGIN:-MARGIN, MARGIN:-MARGIN], dtype=np.float32)
        # each 2 fps frame k gets the 16 fps pair (8k, 8k+1): 2 px right, not the 7 px down between
        # RGB frames nor the 1 px down of the other 16 fps steps
        assert np.allclose(inner[..., :2].mean(axis=(1, 2)), [(2.0, 0.0)] * 4, atol=0.15)
        assert np.allclose(inner[..., 2], np.hypot(inner[..., 0], inner[..., 1]), atol=0.02)


def test_flow_is_added_to_an_existing_cache_and_resumes(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(source, out, annotations=source / "videos.csv", fps=16, folder_fps=16)
    store = DatasetStore(out)
    assert not store.has_flow("a")
    frames_mtime = store.frames_path("a").stat().st_mtime_ns

    summary = prepare_dataset(
        source, out, annotations=source / "videos.csv", fps=16, folder_fps=16, flow="dis"
    )
    assert summary.written == 2 and summary.skipped == 0
    flow = store.read_flow("b")
    assert flow.shape == (32, SIZE, SIZE, 2)
    inner = np.asarray(flow[:, MARGIN:-MARGIN, MARGIN:-MARGIN], dtype=np.float32).mean(axis=(1, 2))
    assert np.allclose(inner[8], (2.0, 0.0), atol=0.2) and np.allclose(inner[9], (0.0, 1.0), atol=0.2)
    assert store.frames_path("a").stat().st_mtime_ns == frames_mtime  # frames were not rewritten
    assert store.meta()["flow"]["method"] == "dis"

    store.flow_path("a").unlink()  # as if the run had been killed before video a's flow
    flow_b_mtime = store.flow_path("b").stat().st_mtime_ns
    again = prepare_dataset(source, out, annotations=source / "videos.csv", fps=16, folder_fps=16, flow="dis")
    assert again.written == 1 and again.skipped == 1
    assert store.has_flow("a") and store.flow_path("b").stat().st_mtime_ns == flow_b_mtime

    with pytest.raises(ValueError, match="flow was computed with"):
        prepare_dataset(
            source, out, annotations=source / "videos.csv", fps=16, folder_fps=16, flow="farneback"
        )
    plain = prepare_dataset(source, out, annotations=source / "videos.csv", fps=16, folder_fps=16)
    assert (
        plain.skipped == 2 and store.meta()["flow"]["method"] == "dis"
    )  # a run without flow keeps the record


def _flow_that_fails_for_dark_videos(frames: np.ndarray) -> np.ndarray:
    from kinetoscope.data.video import VideoError

    if frames[0].mean() < 120:  # one of the two textures (seeds 0, 1) is the darker at its first frame
        raise VideoError("dark video", "truncated or corrupt: no frame could be decoded")
    return np.zeros((*frames.shape[:3], 2), np.float32)


def test_flow_failure_of_a_cached_video_is_listed_in_problems(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(source, out, annotations=source / "videos.csv", fps=16, folder_fps=16)
    store = DatasetStore(out)
    dark = [vid for vid in ("a", "b") if store.read_frames(vid)[0].mean() < 120]
    assert len(dark) == 1  # the test's flow function fails for exactly one video
    summary = prepare_dataset(
        source, out, annotations=source / "videos.csv", fps=16, folder_fps=16, flow=_flow_that_fails_for_dark_videos
    )
    assert summary.failed == 1 and summary.written == 1
    assert [(Path(path).name, problem) for path, problem in store.problems()] == [
        (dark[0], "flow: truncated or corrupt: no frame could be decoded")
    ]
    assert store.has_frames(dark[0]) and not store.has_flow(dark[0])  # frames kept, flow missing and said so


def test_flow_rate_without_a_frame_rate_is_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a fixed frame rate"):
        prepare_dataset(source, tmp_path / "out", annotations=source / "videos.csv", flow={"fps": 16})
