"""Video reading: PyAV round trip with a moving square, timestamp resampling, bad input."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from kinetoscope.data import VideoError, decode_video, read_video, video_info
from kinetoscope.data.video import write_video

H, W, SQ = 48, 64, 8
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def square_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """A white square moving 2 px right per frame on black: frame k has its left edge at x = 2k."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for k in range(n):
        frames[k, 20 : 20 + SQ, 2 * k : 2 * k + SQ] = 255
    return frames


def square_x(frame: np.ndarray) -> float:
    """Left edge of the bright square (sub-pixel from the column profile)."""
    cols = frame[..., 0].astype(float).mean(axis=0)
    bright = np.where(cols > cols.max() / 2)[0]
    return float(bright.min())


def test_round_trip_all_frames_have_right_count_timestamps_and_content(tmp_path: Path) -> None:
    path = tmp_path / "square.mp4"
    write_video(path, square_frames(25), fps=10, codec=CODEC)
    info = video_info(path)
    assert (info.fps, info.frames, info.size) == (10.0, 25, (H, W))
    assert info.duration == pytest.approx(2.5, abs=0.11)
    decoded = decode_video(path)
    assert decoded.frames.shape == (25, H, W, 3) and decoded.frames.dtype == np.uint8
    np.testing.assert_allclose(decoded.timestamps, np.arange(25) / 10, atol=1e-6)
    assert [square_x(f) for f in decoded.frames] == pytest.approx([2 * k for k in range(25)], abs=1)


def test_resample_to_2fps_picks_the_frame_on_screen_at_each_half_second(tmp_path: Path) -> None:
    path = tmp_path / "square.mp4"
    write_video(path, square_frames(25), fps=10, codec=CODEC)
    decoded = decode_video(path, fps=2)
    # 2.5 s of video at 2 fps -> 5 frames at 0, 0.5, ... 2.0 s showing source frames 0, 5, 10, 15, 20
    np.testing.assert_allclose(decoded.timestamps, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert [square_x(f) for f in decoded.frames] == pytest.approx([0, 10, 20, 30, 40], abs=1)


def test_resampling_follows_timestamps_of_a_variable_frame_rate_file(tmp_path: Path) -> None:
    """Frames at irregular times: the output frame at t is the last frame shown at or before t."""
    path = tmp_path / "vfr.mkv"
    times_ms = [0, 100, 150, 700, 720, 1300, 1900, 2000]
    frames = square_frames(len(times_ms))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=1000)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t, image in zip(times_ms, frames, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    decoded = decode_video(path, fps=2)
    expected_source = [0, 2, 4, 5, 7]  # on screen at 0.0, 0.5, 1.0, 1.5, 2.0 s
    assert len(decoded.frames) == 5
    assert [square_x(f) for f in decoded.frames] == pytest.approx([2 * k for k in expected_source], abs=1)


def test_resize_shorter_side_exact_size_and_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "square.mp4"
    write_video(path, square_frames(10), fps=10, codec=CODEC)
    assert read_video(path, size=24).shape == (10, 24, 32, 3)
    assert read_video(path, size=(16, 20)).shape == (10, 16, 20, 3)
    gray = read_video(path, grayscale=True)
    assert gray.shape == (10, H, W, 1) and gray[0, 24, 4, 0] > 200 and gray[0, 5, 40, 0] < 40


def test_segment_decodes_only_its_time_range(tmp_path: Path) -> None:
    path = tmp_path / "square.mp4"
    write_video(path, square_frames(25), fps=10, codec=CODEC)
    decoded = decode_video(path, start=1.0, end=1.5)
    np.testing.assert_allclose(decoded.timestamps, [1.0, 1.1, 1.2, 1.3, 1.4], atol=1e-6)
    assert square_x(decoded.frames[0]) == pytest.approx(20, abs=1)


def test_frame_folder_reads_as_a_video_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for k, image in enumerate(square_frames(12)):
        cv2.imwrite(str(folder / f"img_{k + 1}.png"), image[..., ::-1])
    info = video_info(folder, folder_fps=4)
    assert (info.frames, info.fps, info.size) == (12, 4.0, (H, W))
    frames = read_video(folder, fps=2, folder_fps=4)
    assert [square_x(f) for f in frames] == [0, 4, 8, 12, 16, 20]


# -- bad input -----------------------------------------------------------------------------------------
@pytest.fixture
def good_mp4(tmp_path: Path) -> Path:
    path = tmp_path / "good.mp4"
    write_video(path, square_frames(20), fps=10, codec="mpeg4")
    return path


def test_truncated_mp4_is_reported(tmp_path: Path, good_mp4: Path) -> None:
    data = good_mp4.read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated"):
        read_video(cut)


def test_truncated_faststart_mp4_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for image in square_frames(20):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoError, match="truncated"):
        read_video(path)


def test_zero_byte_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(VideoError, match="empty file"):
        video_info(tmp_path / "empty.mp4")


def test_file_that_is_not_a_video_is_reported(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("these are my field notes, not a video\n" * 50)
    with pytest.raises(VideoError, match="not a video"):
        read_video(tmp_path / "notes.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream.*audio"):
        read_video(path)


def test_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="file not found"):
        read_video(tmp_path / "nowhere.mp4")


def test_segment_longer_than_the_video_is_reported(good_mp4: Path) -> None:
    with pytest.raises(VideoError, match="beyond the end of the video"):
        read_video(good_mp4, start=1.0, end=9.0)
