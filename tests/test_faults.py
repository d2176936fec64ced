"""Faults lose nothing: damaged or replaced weights are refused, checkpoints are atomic and a resume
survives a damaged ``last.ckpt``, operating-system errors are one line naming path and operation, unicode
names keep distinct ids, unsafe pickles get our own refusal.

Disk-full and read-only cases run the real CLI in a private mount namespace on a size-limited (or
read-only) tmpfs when the machine allows it (``unshare``); an in-process variant injects ``ENOSPC`` at the
write call so the behaviour is also checked where namespaces are not available.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kinetoscope.cli import app
from kinetoscope.config import build_config
from kinetoscope.train import fit

runner = CliRunner()
PY = shlex.quote(sys.executable)


def _config(root: Path, out: Path, name: str = "run", **train) -> object:
    return build_config({
        "name": name,
        "out_dir": str(out),
        "data": {"root": str(root), "batch_size": 8},
        "model": {"name": "cnn3d", "hidden": 4, "blocks": 2},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"max_epochs": 2, "progress": False, **train},
    })


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KINETOSCOPE_PLAIN": "1", "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "kinetoscope.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text
    return errors[0]


def _square_video(path: Path, n: int = 20, h: int = 48, w: int = 64) -> None:
    from kinetoscope.data.video import write_video

    frames = np.zeros((n, h, w, 3), np.uint8)
    for k in range(n):
        frames[k, 10:18, k % (w - 8): k % (w - 8) + 8] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=10)


def _mount_namespace_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def _in_mount_namespace(script: str, tmp_path: Path) -> None:
    """Run a shell script in a private mount namespace (its tmpfs mounts vanish with it)."""
    env = {**os.environ, "KINETOSCOPE_PLAIN": "1", "COLUMNS": "80"}
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def namespace(tmp_path):
    if not _mount_namespace_works(tmp_path):
        pytest.skip("no private mount namespace here (unshare); the injected-ENOSPC tests cover the logic")
    return tmp_path


# ------------------------------------------------------------------------------------- verified weights
@pytest.fixture
def trained_run(motion_dataset, tmp_path):
    return fit(_config(motion_dataset, tmp_path, max_epochs=2))


def test_model_json_records_the_sha256_of_the_weights_it_was_written_with(trained_run, motion_dataset, tmp_path):
    spec = json.loads((trained_run / "model.json").read_text())
    assert spec["sha256"] == hashlib.sha256((trained_run / "model.safetensors").read_bytes()).hexdigest()
    # a run started from these weights names them and their checksum in its own model.json
    child = fit(_config(motion_dataset, tmp_path, name="child", max_epochs=1, init_from=str(trained_run)))
    child_spec = json.loads((child / "model.json").read_text())
    assert child_spec["init_from"] == {"path": str(trained_run / "model.safetensors"), "sha256": spec["sha256"]}


def test_overwritten_weights_are_refused_by_every_loader_and_keep_the_good_evaluation(trained_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(trained_run)])
    assert result.exit_code == 0, result.output
    good = (trained_run / "evaluations" / "val.json").read_bytes()
    weights = trained_run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)  # bytes overwritten inside, same length
    weights.write_bytes(bytes(data))

    proc = _cli("evaluate", str(trained_run))  # a real process: exit status and stderr as a user sees them
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert f"{weights} is damaged: its sha256 differs from the one recorded in {trained_run / 'model.json'}" in line
    assert "train" in line  # what to do
    assert (trained_run / "evaluations" / "val.json").read_bytes() == good  # nothing overwritten
    for args in (["explain", str(trained_run), "--method", "gradcam", "--clips", "1"],
                 ["predict", str(trained_run), str(tmp_path / "v.mp4"), "--out", str(tmp_path / "p")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "is damaged" in result.output, result.output
    with pytest.raises(ValueError, match="is damaged"):  # train.init_from goes through the same check
        fit(_config(tmp_path / "motion", tmp_path, name="child", max_epochs=1, init_from=str(trained_run)))
    assert not (tmp_path / "child" / "model.safetensors").exists()


def test_imported_weights_carry_a_checksum_file_that_loading_checks(tmp_path):
    from kinetoscope.models import create_model
    from kinetoscope.models.weights import DamagedFileError, load_safetensors, save_safetensors

    model = create_model("cnn3d", 3, hidden=4, blocks=2)
    path = save_safetensors(model, tmp_path / "w.safetensors", checksum_file=True)
    digest, name = (tmp_path / "w.safetensors.sha256").read_text().split()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and name == "w.safetensors"  # sha256sum -c
    load_safetensors(create_model("cnn3d", 3, hidden=4, blocks=2), path)
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DamagedFileError, match="w.safetensors.sha256"):
        load_safetensors(create_model("cnn3d", 3, hidden=4, blocks=2), path)


# ------------------------------------------------------------------ damaged files, atomic checkpoints
def test_truncated_weights_are_named_damaged_with_or_without_a_recorded_checksum(trained_run):
    weights = trained_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = runner.invoke(app, ["evaluate", str(trained_run)])
    assert result.exit_code == 2 and f"{weights} is damaged" in _one_error_line(result.output)
    spec = json.loads((trained_run / "model.json").read_text())
    del spec["sha256"]  # a run written before checksums: the file itself says it is incomplete
    (trained_run / "model.json").write_text(json.dumps(spec))
    result = runner.invoke(app, ["evaluate", str(trained_run)])
    line = _one_error_line(result.output)
    assert result.exit_code == 2 and f"{weights} is damaged (" in line and "SafetensorError" not in line


def test_resume_falls_back_to_the_newest_intact_checkpoint(trained_run):
    last = trained_run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # a kill during a non-atomic write
    best_epoch = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    result = runner.invoke(app, ["train", "--resume", str(trained_run), "--set", "train.max_epochs=3"])
    assert result.exit_code == 0, result.output
    assert (f"warning: last.ckpt in {trained_run / 'checkpoints'} is damaged; resuming from best.ckpt "
            f"(saved after epoch {best_epoch})") in result.output
    with open(trained_run / "metrics.csv") as fh:
        assert [line.split(",")[0] for line in fh.read().splitlines()[1:]] == ["0", "1", "2"]
    assert torch.load(last, weights_only=True)["global_step"] == 3 * 4  # written whole again by the resumed run
    # every checkpoint damaged: one line, exit 2
    for ckpt in (trained_run / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    result = runner.invoke(app, ["train", "--resume", str(trained_run), "--set", "train.max_epochs=4"])
    assert result.exit_code == 2
    assert "every checkpoint is damaged (" in _one_error_line(result.output)


def test_checkpoints_are_written_beside_the_target_fsynced_and_renamed(tmp_path, monkeypatch):
    from kinetoscope.train.checkpoint_io import AtomicCheckpointIO

    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 0, "state_dict": {"w": torch.ones(3)}}, target)
    assert calls[0].startswith(str(target.parent / ".last.ckpt.")) and calls[1] == str(target.parent)
    assert torch.load(target, weights_only=True)["epoch"] == 0 and os.listdir(target.parent) == ["last.ckpt"]


# ---------------------------------------------------------------------------------- unsafe pickles
class _Payload:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_unsafe_pickles_are_refused_with_our_own_short_message(tmp_path, trained_run):
    evil = tmp_path / "r3d_18.pth"
    torch.save({"conv.weight": _Payload()}, evil)
    result = runner.invoke(app, ["models", "import", "r3d_18", str(evil)])
    line = _one_error_line(result.output)
    assert result.exit_code == 2 and "this ran" not in result.output
    assert f"{evil} holds pickled Python objects (print), not only tensors" in line
    assert "weights_only" not in line
    torch.save({"epoch": 1, "state_dict": _Payload()}, trained_run / "checkpoints" / "last.ckpt")
    result = runner.invoke(app, ["train", "--resume", str(trained_run), "--set", "train.max_epochs=3"])
    assert result.exit_code == 2 and "last.ckpt holds pickled Python objects" in _one_error_line(result.output)


# ---------------------------------------------------------------------------------------- OS errors
def test_a_name_too_long_is_one_line_naming_path_and_operation(tmp_path):
    target = tmp_path / ("x" * 300) / "shapes"
    result = runner.invoke(app, ["synth", "temporal-shapes", str(target), "--num", "4", "--gifs", "0"])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert line.startswith("error: cannot access ") and f"{target}: file name too long; use a shorter" in line


_EMFILE_SCRIPT = """
import os, resource, sys
from kinetoscope.cli import app
# a first run imports every module the command needs (imports open files too)
app(["synth", "temporal-shapes", sys.argv[1] + "-first", "--num", "4", "--gifs", "0"], standalone_mode=False)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
app(["synth", "temporal-shapes", sys.argv[1], "--num", "4", "--gifs", "0"], prog_name="kinetoscope")
"""


def test_too_many_open_files_is_one_line(tmp_path):
    script = tmp_path / "emfile.py"
    script.write_text(_EMFILE_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "shapes")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "KINETOSCOPE_PLAIN": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = _one_error_line(proc.stderr)
    assert f"{tmp_path / 'shapes'}" in line and "too many open files" in line


_COMMANDS_SCRIPT = """
import json, sys
import lightning.pytorch  # its log handler binds the real stderr, not one CliRunner swaps in and closes
from typer.testing import CliRunner
from kinetoscope.cli import app
results = {}
for name, args in json.loads(sys.argv[1]).items():
    result = CliRunner().invoke(app, args)
    results[name] = [result.exit_code, result.output]
print(json.dumps(results))
"""


def test_read_only_and_full_disks_are_one_line_in_every_command(namespace, trained_run, motion_dataset):
    tmp = namespace
    _square_video(tmp / "src" / "a" / "v0.mp4")
    cfg = tmp / "ro.yaml"
    cfg.write_text(_config(motion_dataset, tmp / "ro", name="r", max_epochs=1).to_yaml())
    full_cfg = tmp / "full.yaml"
    full_cfg.write_text(_config(motion_dataset, tmp / "full", name="r", max_epochs=1).to_yaml())
    commands = {
        "synth": ["synth", "temporal-shapes", f"{tmp}/ro/shapes", "--num", "4", "--gifs", "0"],
        "prepare": ["data", "prepare", f"{tmp}/src", f"{tmp}/ro/cache", "--format", "folders"],
        "train": ["train", "--config", str(cfg)],
        "evaluate": ["evaluate", f"{tmp}/ro/run"],
        "explain": ["explain", f"{tmp}/ro/run", "--method", "gradcam", "--clips", "1"],
        "train_full": ["train", "--config", str(full_cfg)],
    }
    (tmp / "commands.py").write_text(_COMMANDS_SCRIPT)
    script = f"""
        mkdir -p {tmp}/ro {tmp}/full
        mount -t tmpfs -o size=1m tmpfs {tmp}/ro && cp -a {trained_run} {tmp}/ro/run && mount -o remount,ro {tmp}/ro
        mount -t tmpfs -o size=16k tmpfs {tmp}/full
        {PY} {tmp}/commands.py {shlex.quote(json.dumps(commands))} >{tmp}/results.json
        ls -A {tmp}/full/r/checkpoints >{tmp}/full.ls
    """
    _in_mount_namespace(textwrap.dedent(script), tmp)
    results = json.loads((tmp / "results.json").read_text())
    writable = "read-only file system; choose an output folder on a writable disk"
    expected = {"synth": f"cannot create directory {tmp}/ro/shapes: {writable}",
                "prepare": f"cannot create directory {tmp}/ro/cache: {writable}",
                "train": f"cannot create directory {tmp}/ro/r: {writable}",
                "evaluate": f"cannot write {tmp}/ro/run/predictions.csv: {writable}",
                "explain": f"cannot create directory {tmp}/ro/run/explanations: {writable}",
                "train_full": f"cannot write {tmp}/full/r/checkpoints/best.ckpt: no space left on the device; "
                              f"free some space and run the command again (finished work is kept)"}
    for name, (code, output) in results.items():
        assert code == 2 and _one_error_line(output) == f"error: {expected[name]}", (name, output[-3000:])
    assert (tmp / "full.ls").read_text().split() == []  # no half-written checkpoint, no temporary


# ----------------------------------------------------------------------------- data prepare at a full disk
def _five_videos(root: Path) -> Path:
    for i in range(5):
        _square_video(root / ("a" if i < 3 else "b") / f"v{i}.mp4")
    return root


def test_prepare_stops_cleanly_at_a_full_disk_and_carries_on_after(namespace):
    tmp = namespace
    src = _five_videos(tmp / "src")
    mnt = tmp / "mnt"
    mnt.mkdir()
    # 256 pages of tmpfs; the ballast leaves 120: two videos (46 pages of frames + 1 of meta each) fit
    script = f"""
        mount -t tmpfs -o size=1024k tmpfs {mnt}
        dd if=/dev/zero of={mnt}/ballast bs=4k count=136 2>/dev/null
        {PY} -m kinetoscope.cli data prepare {src} {mnt}/out --format folders >{tmp}/o1 2>{tmp}/e1; echo $? >{tmp}/rc1
        cp -a {mnt}/out {tmp}/after_full
        rm {mnt}/ballast
        {PY} -m kinetoscope.cli data prepare {src} {mnt}/out --format folders >{tmp}/o2 2>{tmp}/e2; echo $? >{tmp}/rc2
        cp -a {mnt}/out {tmp}/after_rerun
    """
    _in_mount_namespace(textwrap.dedent(script), tmp)
    assert int((tmp / "rc1").read_text()) == 2
    line = _one_error_line((tmp / "e1").read_text())
    assert line == (f"error: cannot write {mnt}/out/frames/a__v2.npy: no space left on the device; free some space "
                    f"and run the command again (finished work is kept); stopped at video {src}/a/v2.mp4 (a__v2); "
                    f"2 videos cached and kept")
    kept = tmp / "after_full"
    assert sorted(p.name for p in (kept / "frames").iterdir()) == ["a__v0.npy", "a__v1.npy"]
    assert not list(kept.rglob("*.tmp"))
    assert (kept / "annotations.csv").read_text().count("\n") == 3  # header + the 2 finished videos
    assert int((tmp / "rc2").read_text()) == 0, (tmp / "e2").read_text()
    assert "3 videos cached, 2 already done" in " ".join((tmp / "o2").read_text().split())
    assert len(list((tmp / "after_rerun" / "frames").iterdir())) == 5


def test_prepare_stops_cleanly_at_an_injected_full_disk(tmp_path, monkeypatch):
    """The same on any machine: ``ENOSPC`` raised by the write of the third video's frames."""
    from kinetoscope.data.prepare import prepare_dataset

    src = _five_videos(tmp_path / "src")
    out = tmp_path / "out"
    real_save = np.save
    writes = []

    def save(fh, array, **kwargs):
        writes.append(array.shape)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(fh, array, **kwargs)

    monkeypatch.setattr(np, "save", save)
    result = runner.invoke(app, ["data", "prepare", str(src), str(out), "--format", "folders"])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert line.startswith(f"error: cannot write {out}/frames/a__v2.npy: no space left on the device")
    assert line.endswith(f"stopped at video {src}/a/v2.mp4 (a__v2); 2 videos cached and kept")
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["a__v0.npy", "a__v1.npy"]
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(np, "save", real_save)
    summary = prepare_dataset(src, out, format="folders")
    assert (summary.written, summary.skipped, summary.cached_total) == (3, 2, 5)


# ------------------------------------------------------------------------------------- unicode video ids
def test_unicode_names_keep_distinct_stable_ids_and_old_caches_keep_theirs(tmp_path):
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.prepare import prepare_dataset

    src = tmp_path / "src"
    names = ["日本.mp4", "中国.mp4", "café.mp4", "cafè.mp4", "cafe.mp4"]
    for name in names:
        _square_video(src / "u" / name, n=4, h=16, w=16)

    def h(rel: str) -> str:
        return hashlib.sha256(rel.encode()).hexdigest()[:8]

    expected = {"日本.mp4": "u__RiBen", "中国.mp4": "u__ZhongGuo", "cafe.mp4": "u__cafe",  # plain ASCII keeps its id
                "café.mp4": f"u__cafe-{h('u/café.mp4')}", "cafè.mp4": f"u__cafe-{h('u/cafè.mp4')}"}
    summary = prepare_dataset(src, tmp_path / "out", format="folders")
    assert summary.written == 5 and not summary.problems
    ids = {Path(r.path).name: r.video_id for r in DatasetStore(tmp_path / "out").records()}
    assert ids == expected
    again = prepare_dataset(src, tmp_path / "out", format="folders")  # stable: nothing decoded again
    assert again.skipped == 5 and {Path(r.path).name: r.video_id
                                   for r in DatasetStore(tmp_path / "out").records()} == expected

    # a cache made before: 日本.mp4 became "u" and the other unicode names were dropped as duplicates
    old = tmp_path / "old"
    prepare_dataset(src, old, format="folders")
    store = DatasetStore(old)
    records = store.records()
    first = next(r for r in records if r.path.endswith("日本.mp4"))
    (old / "frames" / f"{first.video_id}.npy").rename(old / "frames" / "u.npy")
    store.write_records([first.__class__(**{**first.__dict__, "video_id": "u"})])
    for r in records:
        if r is not first:
            (old / "frames" / f"{r.video_id}.npy").unlink()
    rerun = prepare_dataset(src, old, format="folders")
    ids = {Path(r.path).name: r.video_id for r in DatasetStore(old).records()}
    assert ids == {**expected, "日本.mp4": "u"} and rerun.skipped == 1 and rerun.written == 4


def test_csv_rows_with_colliding_unicode_names_stay_distinct_and_true_duplicates_do_not(tmp_path):
    from kinetoscope.data.annotations import read_csv

    table = tmp_path / "videos.csv"
    table.write_text("path,label\ncafé.mp4,a\ncafè.mp4,a\ncafé.mp4,a\n", encoding="utf-8")
    problems: list[tuple[str, str]] = []
    records = read_csv(table, problems=problems)
    assert [r.video_id for r in records] == [f"cafe-{hashlib.sha256(n.encode()).hexdigest()[:8]}"
                                             for n in ("café.mp4", "cafè.mp4")]
    assert len(problems) == 1 and "duplicate video" in problems[0][1] and ":4" in problems[0][0]
