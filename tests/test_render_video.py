"""Annotated videos: ``predict --render`` MP4 (top classes + score timeline) and ``explain --render mp4``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kinetoscope.data.video import read_video, video_info, write_video
from kinetoscope.report.video import STRIP_HEIGHT, render_prediction_video


def grey_video(path: Path, frames: int = 20, fps: float = 10.0, size: tuple[int, int] = (48, 64)) -> Path:
    video = np.full((frames, *size, 3), 128, np.uint8)
    write_video(path, video, fps=fps)
    return path


def test_the_timeline_is_red_where_the_focus_class_scores_high_and_frames_are_all_kept(tmp_path):
    source = grey_video(tmp_path / "in.mp4", size=(96, 64))
    windows = [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])  # "pain" high in the second second
    out = render_prediction_video(source, tmp_path / "out.mp4", windows, scores, ["none", "pain"], "pain")
    info = video_info(out)
    assert info.frames == 20 and info.size == (96 + STRIP_HEIGHT, 64) and info.fps == pytest.approx(10)
    frame = read_video(out)[0].astype(int)
    strip = frame[96 + 4 : 96 + STRIP_HEIGHT - 4]
    first, second = strip[:, 2:28].reshape(-1, 3), strip[:, 36:62].reshape(-1, 3)
    redness = lambda px: ((px[:, 0] - px[:, 2]) > 60).mean()  # noqa: E731
    assert redness(second) > 0.2 and redness(first) < 0.02
    assert (np.abs(frame[50:94] - 128) < 12).mean() > 0.95  # the picture below the class box is left alone
    with pytest.raises(ValueError, match="one per window"):
        render_prediction_video(source, tmp_path / "x.mp4", windows[:2], scores, ["none", "pain"], "pain")


def test_predict_render_writes_an_annotated_mp4_per_video(tmp_path):
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.models import create_model
    from kinetoscope.models.checkpoint import save_run_model
    from kinetoscope.suites.predict import predict_videos

    data = tmp_path / "data"
    DatasetStore(data).write_meta({"name": "d", "classes": ["a", "b"], "fps": 10, "size": [32, 32], "channels": 3})
    options = {"hidden": 4, "blocks": 2, "input_size": 32, "frames": 8}
    torch.manual_seed(0)
    save_run_model(create_model("cnn3d", 2, 3, **options), tmp_path / "run",
                   {"name": "cnn3d", "num_classes": 2, "in_channels": 3, "options": options, "classes": ["a", "b"]})
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(data), "frames": 8}}))
    video = grey_video(tmp_path / "clip.mp4", frames=30, size=(40, 40))
    predict_videos(tmp_path / "run", [video], tmp_path / "out", render=True)
    out = tmp_path / "out" / "annotated_clip.mp4"
    assert video_info(out).frames == 30 and video_info(out).size == (40 + STRIP_HEIGHT, 40)


def test_explain_render_mp4_writes_the_animation_beside_the_gif(untrained_run):
    from kinetoscope.explain import explain_run

    out = explain_run(untrained_run, method="gradcam", clips=1, mp4=True)
    gifs, mp4s = sorted(out.rglob("*.gif")), sorted(out.rglob("*.mp4"))
    assert len(gifs) == 1 and [p.with_suffix(".gif") for p in mp4s] == gifs
    from PIL import Image

    gif = Image.open(gifs[0])
    assert video_info(mp4s[0]).frames == gif.n_frames == 8
    width, height = gif.size
    assert video_info(mp4s[0]).size == (height + height % 2, width + width % 2)
