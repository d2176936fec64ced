"""``data prepare`` / ``data inspect``: good files cached, bad ones in problems.csv, kill -9 safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.prepare import inspect_dataset, parse_shard, prepare_dataset, render_inspection
from kinetoscope.data.video import write_video


def square_video(path: Path, n: int = 20, fps: float = 10, h: int = 48, w: int = 64) -> None:
    frames = np.zeros((n, h, w, 3), np.uint8)
    for k in range(n):
        frames[k, 10:18, k % (w - 8) : k % (w - 8) + 8] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=fps)


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, Path]:
    """Three good videos and one of every kind of bad input, listed in one CSV."""
    src = tmp_path / "src"
    square_video(src / "good1.mp4")
    square_video(src / "good2.mp4", n=30)
    square_video(src / "good3.mp4", n=40)
    data = (src / "good1.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (src / "zero.mp4").touch()
    (src / "text.mp4").write_text("not a video " * 100)
    import av

    with av.open(str(src / "audio.m4a"), "w") as c:
        s = c.add_stream("aac", rate=8000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate = 8000
        for p in [*s.encode(fr), *s.encode()]:
            c.mux(p)
    table = tmp_path / "videos.csv"
    table.write_text(
        textwrap.dedent("""\
        path,label,subject,start,end
        good1.mp4,pain,1,,
        good2.mp4,no_pain,2,,
        good3.mp4,pain,3,1.0,3.0
        good1.mp4,pain,1,0.5,9.0
        truncated.mp4,pain,1,,
        zero.mp4,no_pain,2,,
        text.mp4,no_pain,2,,
        audio.m4a,pain,3,,
        missing.mp4,pain,3,,
        good2.mp4,pian,2,,
        """)
    )
    return src, table


def test_prepare_caches_good_videos_and_names_every_bad_one(messy: tuple[Path, Path], tmp_path: Path) -> None:
    src, table = messy
    out = tmp_path / "cache"
    summary = prepare_dataset(src, out, annotations=table, fps=2, size=(24, 32), classes=["no_pain", "pain"])
    store = DatasetStore(out)
    records = {r.video_id: r for r in store.records()}
    assert sorted(records) == ["good1", "good2", "good3__1-3"]
    assert store.read_frames("good1").shape == (4, 24, 32, 3)  # 2 s at 2 fps
    assert store.read_frames("good3__1-3").shape == (4, 24, 32, 3)  # the 1-3 s segment
    assert (
        records["good2"].num_frames == 6 and records["good2"].fps == 2.0 and records["good2"].subject == "2"
    )
    problems = dict(
        (Path(p.split(" (")[-1].rstrip(")")).name if "csv:" in p else Path(p).name, why)
        for p, why in store.problems()
    )
    assert "truncated" in problems["truncated.mp4"]
    assert "empty file" in problems["zero.mp4"]
    assert "not a video" in problems["text.mp4"]
    assert "no video stream" in problems["audio.m4a"]
    assert "file not found" in problems["missing.mp4"]
    assert "unknown label 'pian'" in problems["good2.mp4"]
    assert any("beyond the end of the video" in why for why in problems.values())  # good1 0.5-9.0 s
    assert (summary.written, summary.failed, summary.annotation_problems) == (3, 6, 1)
    assert store.meta()["classes"] == ["no_pain", "pain"] and store.meta()["fps"] == 2

    again = prepare_dataset(src, out, annotations=table, fps=2, size=(24, 32), classes=["no_pain", "pain"])
    assert (again.skipped, again.written, again.failed) == (3, 0, 6)
    with pytest.raises(ValueError, match="was prepared with"):
        prepare_dataset(src, out, annotations=table, fps=4, size=(24, 32))

    info = inspect_dataset(out)
    assert info["per_class"] == {"no_pain": 1, "pain": 2} and len(info["problems"]) == 7
    from rich.console import Console

    console = Console(record=True, width=120)
    render_inspection(info, console)
    text = console.export_text()
    assert "per class" in text and "no video stream" in text


def test_shards_split_the_work_and_the_last_one_indexes_everything(tmp_path: Path) -> None:
    for k in range(5):
        square_video(tmp_path / "src" / ("walk" if k % 2 else "run") / f"clip{k}.mp4", n=10)
    out = tmp_path / "cache"
    first = prepare_dataset(tmp_path / "src", out, format="folders", size=16, shard="0/2")
    second = prepare_dataset(tmp_path / "src", out, format="folders", size=16, shard=(1, 2))
    assert (first.written, second.written) == (3, 2)
    assert len(DatasetStore(out).records()) == 5 and DatasetStore(out).read_frames("run__clip0").shape[
        1:
    ] == (16, 21, 3)
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("2")


def test_worker_pool_gives_the_same_cache(tmp_path: Path) -> None:
    for k in range(3):
        square_video(tmp_path / "src" / "a" / f"v{k}.mp4", n=12)
    serial = prepare_dataset(tmp_path / "src", tmp_path / "s", format="folders", fps=5)
    pooled = prepare_dataset(tmp_path / "src", tmp_path / "p", format="folders", fps=5, workers=2)
    assert serial.written == pooled.written == 3
    for r in DatasetStore(tmp_path / "s").records():
        assert np.array_equal(
            DatasetStore(tmp_path / "s").read_frames(r.video_id),
            DatasetStore(tmp_path / "p").read_frames(r.video_id),
        )


def test_kill_9_leaves_whole_files_and_a_rerun_finishes_without_redoing(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "cache"
    n_videos = 12
    for k in range(n_videos):
        square_video(src / "x" / f"v{k:02d}.mp4", n=120, h=240, w=320, fps=30)
    script = (
        f"from kinetoscope.data.prepare import prepare_dataset\n"
        f"prepare_dataset({str(src)!r}, {str(out)!r}, format='folders')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "KINETOSCOPE_PLAIN": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    frames_dir = out / "frames"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(frames_dir.glob("*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in frames_dir.glob("*.npy")}
    assert 0 < len(done_before) < n_videos, "the job was not interrupted mid-way"
    for path in frames_dir.glob("*.npy"):  # every visible file is whole
        assert np.load(path).shape == (120, 240, 320, 3)
    summary = prepare_dataset(src, out, format="folders")
    assert summary.skipped == len(done_before) and summary.written == n_videos - len(done_before)
    assert {
        p.name: p.stat().st_mtime_ns for p in frames_dir.glob("*.npy") if p.name in done_before
    } == done_before
    assert not list(out.rglob("*.tmp")) and len(DatasetStore(out).records()) == n_videos
