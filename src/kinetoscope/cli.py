"""The one command line: ``kinetoscope <command>``.

Thin by design (docs/architecture.md): every command parses its options and calls one function of the
packages; heavy imports (torch, lightning) happen inside the commands so ``--help`` stays fast.
Errors that users can fix (bad config, missing file, unknown name) are printed as one red line and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="kinetoscope",
    help="Video recognition that takes time seriously: train, evaluate, probe and explain "
    "spatiotemporal models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Generate and derive datasets.", no_args_is_help=True)
data_app = typer.Typer(help="Index, decode and cache videos; inspect datasets.", no_args_is_help=True)
models_app = typer.Typer(help="List models, profile one, import weights.", no_args_is_help=True)
suite_app = typer.Typer(help="Probing suites: Temporal Shapes study, reversal, appearance-free, shape/texture, "
                        "privacy.",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(suite_app, name="suite")

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def user_errors(fn):
    """Report expected errors as one line (exit 2); anything else keeps its traceback. An error of the
    operating system (disk full, read-only file system, name too long, too many open files, permission)
    names the operation and the path."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                from kinetoscope.utils import describe_os_error

                message = describe_os_error(exc)
            elif isinstance(exc, USER_ERRORS):
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            else:
                raise
            from rich.markup import escape

            console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


Accelerator = Annotated[
    str | None,
    typer.Option(help="auto (GPU if present), cpu, gpu or mps; also what 'auto' means in configs this command "
                      "runs ($KINETOSCOPE_ACCELERATOR)."),
]


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library banners, tips and warnings.")]
    = False,
) -> None:
    """Video recognition that takes time seriously: train, evaluate, probe and explain spatiotemporal models."""
    import os

    if verbose:
        os.environ["KINETOSCOPE_VERBOSE"] = "1"
    from kinetoscope.utils import quiet_libraries

    quiet_libraries()


def _accelerator(value: str | None) -> None:
    from kinetoscope.device import use_accelerator

    use_accelerator(value)


Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set model.hidden=16.")
]


# ---------------------------------------------------------------------------------------------- demo
@app.command()
@user_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo run goes.")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="A much smaller demo (a minute; models barely learn).")] = False,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option(help="Start over instead of resuming finished steps.")] = False,
    accelerator: Accelerator = None,
    digits: Annotated[Path | None, typer.Option(help="Directory with MNIST IDX files for the MNIST domains "
                                                     "(default $KINETOSCOPE_MNIST, else scikit-learn's "
                                                     "bundled digits).")] = None,
) -> None:
    """Temporal Shapes in minutes: generate, train a 3D CNN and a ConvLSTM, evaluate, report.

    Evaluates across domains (rr) and under frame reversal; writes report.html."""
    from kinetoscope.suites.demo import run_demo

    _accelerator(accelerator)
    report = run_demo(out_dir, quick=quick, seed=seed, overwrite=overwrite, digits=digits)
    out.print(f"report: [bold]{report}[/]  (open it in a browser)")


# --------------------------------------------------------------------------------------------- synth
@synth_app.command("temporal-shapes")
@user_errors
def synth_temporal_shapes(
    out_dir: Annotated[Path, typer.Argument(help="Output dataset directory.")],
    domain: Annotated[str, typer.Option(help="2dot, 5dot, mnist or mnist-bg.")] = "2dot",
    num: Annotated[int, typer.Option(help="Number of clips.")] = 5000,
    split: Annotated[str, typer.Option(help="'trainval' (random 80/20 split) or a split name for all clips.")]
    = "trainval",
    frames: int = 20,
    size: int = 64,
    seed: int = 0,
    val_fraction: Annotated[float, typer.Option(help="Validation share of a 'trainval' split.")] = 0.2,
    digits: Annotated[Path | None, typer.Option(help="Directory with MNIST IDX files, gzip or raw (default: "
                                                     "$KINETOSCOPE_MNIST, else scikit-learn's bundled "
                                                     "digits).")] = None,
    exact_width: Annotated[bool, typer.Option(help="Draw the 2dot square exactly 2 px wide (the authors' "
                                                   "code draws 3 px).")] = False,
    gifs: Annotated[int, typer.Option(help="Preview GIFs to write.")] = 5,
    overwrite: bool = False,
) -> None:
    """Generate Temporal Shapes (Broomé 2022 §5.1): 5 trajectory classes, 4 appearance domains."""
    from kinetoscope.synth import generate_temporal_shapes

    path = generate_temporal_shapes(out_dir, domain=domain, num=num, split=split, val_fraction=val_fraction,
                                    seed=seed, frames=frames, size=size, digits=digits, overwrite=overwrite,
                                    gifs=gifs, exact_width=exact_width)
    out.print(f"wrote {num} clips to [bold]{path}[/]")


@synth_app.command("moving-objects")
@user_errors
def synth_moving_objects(
    out_dir: Annotated[Path, typer.Argument(help="Output dataset directory.")],
    num: Annotated[int, typer.Option(help="Number of videos.")] = 60,
    frames: int = 16,
    size: int = 128,
    max_objects: Annotated[int, typer.Option(help="Objects per video: 1 to this many.")] = 3,
    empty_videos: Annotated[int, typer.Option(help="How many of the videos have no objects.")] = 0,
    split: Annotated[str, typer.Option(help="'trainval' (random split) or a split name for all videos.")]
    = "trainval",
    val_fraction: float = 0.25,
    seed: int = 0,
    gifs: Annotated[int, typer.Option(help="Preview GIFs with boxes to write.")] = 3,
    overwrite: bool = False,
) -> None:
    """Videos of moving, occluding, textured objects with boxes and identities (object detection)."""
    from kinetoscope.synth.moving_objects import generate_moving_objects

    path = generate_moving_objects(out_dir, num, frames=frames, size=size, max_objects=max_objects,
                                   empty_videos=empty_videos, split=split, val_fraction=val_fraction, seed=seed,
                                   gifs=gifs, overwrite=overwrite)
    out.print(f"wrote {num} videos to [bold]{path}[/]")


@synth_app.command("appearance-free")
@user_errors
def synth_appearance_free(
    source: Annotated[Path, typer.Argument(help="A prepared or generated dataset directory.")],
    out_dir: Annotated[Path, typer.Argument(help="Output dataset directory.")],
    flow: Annotated[str, typer.Option(help="Flow method: auto (raft if its weights are imported, else the "
                                           "measured fallback, docs/flow.md), farneback, tvl1, dis or raft.")]
    = "auto",
    mode: Annotated[str, typer.Option(help="first-frame (default, the thesis) or sequential.")] = "first-frame",
    placement: Annotated[str, typer.Option(help="splat (forward placement) or sample (the authors' code).")]
    = "splat",
    seed: int = 0,
    grayscale: bool = False,
    no_flow: Annotated[bool, typer.Option("--no-flow", help="Do not keep the flow beside the frames.")] = False,
    overwrite: bool = False,
) -> None:
    """Turn videos into appearance-free (random-dot) videos that keep only motion (Ilic 2024 §4.3)."""
    from kinetoscope.synth.appearance_free import make_appearance_free_dataset

    path = make_appearance_free_dataset(source, out_dir, flow_method=flow, mode=mode, placement=placement, seed=seed,
                                        grayscale=grayscale, write_flow=not no_flow, overwrite=overwrite)
    out.print(f"wrote [bold]{path}[/]")


@synth_app.command("domains")
@user_errors
def synth_domains(
    source: Annotated[Path, typer.Argument(help="A prepared dataset directory.")],
    out_dir: Annotated[Path, typer.Argument(help="Output root: one dataset per domain.")],
    masks: Annotated[Path | None, typer.Option(help="Directory of <video_id>.npy actor masks [T,H,W].")] = None,
    boxes: Annotated[Path | None, typer.Option(help="CSV of per-frame actor boxes.")] = None,
    domain: Annotated[list[str] | None, typer.Option(help="S1, S2 and/or T (default: all possible).")] = None,
    blur_sigma: float = 5.0,
    fill: Annotated[str, typer.Option(help="T fill: imagenet, clip or R,G,B.")] = "imagenet",
    overwrite: bool = False,
) -> None:
    """Shape/texture test domains (Broomé 2022, Diving48): S1 segmented actor, S2 actor box, T filled box."""
    from kinetoscope.synth.domains import DOMAINS, make_domain_datasets

    fill_value: str | tuple[float, ...] = fill
    if "," in fill:
        try:
            fill_value = tuple(float(v) for v in fill.split(","))
        except ValueError:
            raise ValueError(f"--fill {fill!r} must be imagenet, clip or R,G,B numbers, e.g. 124,116,104") from None
    paths = make_domain_datasets(source, out_dir, masks_dir=masks, boxes_csv=boxes,
                                 domains=tuple(domain) if domain else DOMAINS, blur_sigma=blur_sigma,
                                 fill=fill_value, overwrite=overwrite)
    for name, path in paths.items():
        out.print(f"{name}: [bold]{path}[/]")


@synth_app.command("templates")
@user_errors
def synth_templates(
    image: Annotated[Path, typer.Argument(help="Source image of the template.")],
    patch: Annotated[str, typer.Option(help="Pixel x,y of the patch whose key becomes the template.")],
    name: Annotated[str, typer.Option(help="Template name, e.g. torso.")],
    library: Annotated[Path, typer.Option(help="Template library (JSON).")] = Path("templates.json"),
    extractor: Annotated[str, typer.Option(help="Key extractor: dino (ViT-S/8 keys) or colour (stand-in).")]
    = "dino",
    weights: Annotated[Path | None, typer.Option(help="DINO ViT-S/8 .safetensors (models import --from dino).")]
    = None,
    stride: Annotated[int, typer.Option(help="DINO patch-embedding stride.")] = 4,
    overwrite: bool = False,
) -> None:
    """Add a privacy template: the key vector at one patch of an image (Ilic 2024 §5.3)."""
    from kinetoscope.models.dino_vit import make_key_extractor
    from kinetoscope.synth.privacy import parse_point, template_from_file

    template = template_from_file(image, parse_point(patch), name, make_key_extractor(extractor, weights, stride),
                                  library, overwrite=overwrite)
    out.print(f"template [bold]{template.name}[/] (patch {template.patch}, key length {len(template.key)}) "
              f"-> {library}")


@synth_app.command("obfuscate")
@user_errors
def synth_obfuscate(
    source: Annotated[Path, typer.Argument(help="A prepared or generated dataset directory.")],
    out_dir: Annotated[Path, typer.Argument(help="Output dataset directory.")],
    method: Annotated[str, typer.Option(help="motion-noise, iid-noise, mask, pixelate or blur.")] = "motion-noise",
    templates: Annotated[str, typer.Option(help="Comma-separated template names.")] = "torso,arm,leg,hair",
    library: Annotated[Path, typer.Option(help="Template library (JSON).")] = Path("templates.json"),
    extractor: Annotated[str, typer.Option(help="Key extractor the templates were made with: dino or colour.")]
    = "dino",
    weights: Annotated[Path | None, typer.Option(help="DINO ViT-S/8 .safetensors.")] = None,
    stride: Annotated[int, typer.Option(help="DINO patch-embedding stride.")] = 4,
    masks: Annotated[Path | None, typer.Option(help="Directory of <video_id>.npy person masks [T,H,W] (mask).")]
    = None,
    block: Annotated[int, typer.Option(help="Pixelate block: 4 or 16.")] = 4,
    strength: Annotated[str, typer.Option(help="Blur: weak (κ=13, σ=10) or strong (κ=21, σ=10) at 224².")] = "weak",
    flow: Annotated[str, typer.Option(help="Flow method for motion-noise (farneback, tvl1, dis, ...).")]
    = "farneback",
    mode: Annotated[str, typer.Option(help="sequential (noise travels with the flow) or first-frame.")]
    = "sequential",
    combine: Annotated[str, typer.Option(help="Template saliencies: mean (Eq. 5.1) or max.")] = "mean",
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Hide identity, keep motion: privacy obfuscation of a dataset (Ilic 2024 §5.3) or a baseline."""
    from kinetoscope.synth.privacy import ObfuscationSettings, make_obfuscated_dataset

    settings = ObfuscationSettings(method=method, templates=tuple(n.strip() for n in templates.split(",") if n.strip()),
                                   combine=combine, mode=mode, flow_method=flow, block=block, strength=strength,
                                   seed=seed)
    key_extractor = None
    if settings.needs_saliency:
        from kinetoscope.models.dino_vit import make_key_extractor

        key_extractor = make_key_extractor(extractor, weights, stride)
    path = make_obfuscated_dataset(source, out_dir, settings, library=library, extractor=key_extractor,
                                   masks_dir=masks, overwrite=overwrite)
    out.print(f"wrote [bold]{path}[/]")


# ---------------------------------------------------------------------------------------------- data
@data_app.command("prepare")
@user_errors
def data_prepare(
    source: Annotated[Path, typer.Argument(help="Folder of videos (class folders) or the dataset root.")],
    out_dir: Annotated[Path, typer.Argument(help="Output dataset directory (the frame cache).")],
    annotations: Annotated[Path | None, typer.Option(help="Annotations file (CSV, split list, JSON).")] = None,
    format: Annotated[str, typer.Option(help="csv, folders, ucf101, hmdb51, ssv2 or kth.")] = "folders",
    fps: Annotated[float | None, typer.Option(help="Resample to this frame rate (by timestamps).")] = None,
    size: Annotated[str | None, typer.Option(help="Shorter side in pixels (e.g. 128) or HxW (112x112).")]
    = None,
    grayscale: bool = False,
    split: Annotated[str | None, typer.Option(help="Official split number (ucf101/hmdb51) or KTH scheme "
                                                   "(standard, accv).")] = None,
    classes: Annotated[Path | None, typer.Option(help="File listing the class names, one per line.")] = None,
    folder_fps: Annotated[float, typer.Option(help="Frame rate of folders of frames.")] = 25.0,
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 0,
    shard: Annotated[str | None, typer.Option(help="i/n: only this shard of the videos (array jobs).")] = None,
    flow: Annotated[str | None, typer.Option(help="Also cache optical flow: farneback, tvl1, dis, raft or auto.")]
    = None,
    flow_fps: Annotated[float | None, typer.Option(help="Compute flow at this rate, matched to the frames "
                                                        "(Broomé 2022: 16 with --fps 2).")] = None,
    flow_magnitude: Annotated[bool, typer.Option(help="Add sqrt(u²+v²) as a third flow channel.")] = False,
    flow_pair: Annotated[str, typer.Option(help="forward (t, t+1) or backward (t-1, t).")] = "forward",
    flow_option: Annotated[list[str] | None, typer.Option(help="Flow method option KEY=VALUE (repeatable).")]
    = None,
) -> None:
    """Index, decode, resample and cache videos (and flow); problems go to problems.csv."""
    from kinetoscope.config import parse_override
    from kinetoscope.data.annotations import read_classes
    from kinetoscope.data.prepare import prepare_dataset

    size_value: int | tuple[int, int] | None = None
    if size:
        try:
            size_value = tuple(int(v) for v in size.lower().split("x")) if "x" in size.lower() else int(size)
        except ValueError:
            raise ValueError(f"--size {size!r} must be a number (shorter side) or HxW, e.g. 112x112") from None
    flow_spec = None
    if flow:
        options = {}
        for item in flow_option or []:
            key, value = parse_override(item)
            options[".".join(key)] = value
        flow_spec = {"method": flow, "fps": flow_fps, "magnitude": flow_magnitude, "pair": flow_pair,
                     "options": options}
    summary = prepare_dataset(source, out_dir, annotations=annotations, format=format, fps=fps, size=size_value,
                              grayscale=grayscale, workers=workers, shard=shard, split=split,
                              classes=read_classes(classes) if classes else None, folder_fps=folder_fps,
                              flow=flow_spec)
    out.print(summary)


@data_app.command("inspect")
@user_errors
def data_inspect(root: Annotated[Path, typer.Argument(help="A prepared or generated dataset directory.")]) -> None:
    """Counts per class and subject, durations, and problems found."""
    from kinetoscope.data.prepare import inspect_dataset, render_inspection

    out.print(render_inspection(inspect_dataset(root)))


# --------------------------------------------------------------------------------------------- train
@app.command()
@user_errors
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")] = None,
    overrides: Overrides = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides train.seed).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the interrupted run in this directory.")]
    = None,
    devices: Annotated[int | None, typer.Option(help="Number of processes/devices.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Lightning strategy, e.g. ddp.")] = None,
    accelerator: Accelerator = None,
    precision: Annotated[str | None, typer.Option(help="32, bf16-mixed or 16-mixed (train.precision).")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Machines for multi-node DDP (train.num_nodes).")] = None,
    overwrite: bool = False,
) -> None:
    """Train a model from a config; writes the run directory and its predictions."""
    from kinetoscope.config import load_config
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.train import fit
    from kinetoscope.train.fit import is_child_process

    extra = list(overrides or [])
    if seed is not None:
        extra.append(f"train.seed={seed}")
    if devices is not None:
        extra.append(f"train.devices={devices}")
    if strategy is not None:
        extra.append(f"train.strategy={strategy}")
    for key, value in (("accelerator", accelerator), ("precision", precision), ("num_nodes", num_nodes)):
        if value is not None:
            extra.append(f"train.{key}={value}")
    _accelerator(accelerator)
    if resume is not None:
        if config is None:
            config = resume / "config.yaml"
        extra += [f"out_dir={resume.parent}", f"name={resume.name}"]
    if config is None:
        raise ValueError("pass --config FILE (or --resume RUN_DIR)")
    run_config = load_config(config, extra)
    run_dir = fit(run_config, overwrite=overwrite, resume=resume is not None)
    if is_child_process():
        return
    metrics = predict_run(run_dir, accelerator=run_config.train.accelerator)
    out.print(f"run: [bold]{run_dir}[/]  val accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}")


@app.command("detect-track")
@user_errors
def detect_track(
    data: Annotated[Path, typer.Argument(help="A detection dataset (synth moving-objects, data import-vid).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/detect-track"),
    model: Annotated[str, typer.Option(help="detect_track (ResNet-101) or detect_track_cpu (ResNet-18).")]
    = "detect_track_cpu",
    steps: int = 600,
    batch_size: int = 2,
    lr: float = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adamw or sgd.")] = "adamw",
    tau: Annotated[int, typer.Option(help="Frame distance of the training pairs.")] = 1,
    threads: Annotated[int, typer.Option(help="Torch threads (0: torch's default).")] = 1,
    seed: int = 0,
    options: Annotated[list[str] | None, typer.Option("--set", help="Model option, e.g. --set width=32.")] = None,
    resume: bool = False,
    overwrite: bool = False,
) -> None:
    """Train Detect & Track on frame pairs, then evaluate: frame mAP before and after tube linking."""
    from kinetoscope.evaluate.detect_track import evaluate_detect_track
    from kinetoscope.report.tables import detection_table
    from kinetoscope.train.detect_track import fit_detect_track

    run_dir = fit_detect_track(data, out_dir, model=model, model_options=_settings(options), steps=steps,
                               batch_size=batch_size, lr=lr, optimizer=optimizer, tau=tau, seed=seed,
                               threads=threads or None, resume=resume, overwrite=overwrite)
    out.print(detection_table(evaluate_detect_track(run_dir)))
    out.print(f"run: [bold]{run_dir}[/]")


# ------------------------------------------------------------------------------------------ evaluate
@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Annotated[Path | None, typer.Option(help="Dataset to evaluate on (default: the run's val split).")]
    = None,
    split: Annotated[str | None, typer.Option(help="Split of --data to use (default: all clips).")] = None,
    reverse: Annotated[bool, typer.Option(help="Reverse every clip's frames.")] = False,
    name: Annotated[str | None, typer.Option(help="Name of this evaluation.")] = None,
    accelerator: Accelerator = None,
    views: Annotated[str | None, typer.Option(help="Multi-view testing: TxS (T clips x S crops: 1, 2 = centre "
                                                   "+ flip, 3, 10 = corners + centre with flips) or a preset: "
                                                   "stergiou-30, feichtenhofer-25.")] = None,
    fusion: Annotated[str, typer.Option(help="--views: fuse by mean, max or vote.")] = "mean",
    crop: Annotated[int | None, typer.Option(help="--views: crop size (default: the model's input size).")] = None,
    resize: Annotated[int | None, typer.Option(help="--views: shorter side before cropping.")] = None,
) -> None:
    """Accuracy, top-5, mean-class accuracy, P/R, AUROC, confusion PNG; rr on another domain; --reverse;
    --views for multi-view testing."""
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.report.tables import detection_table, metrics_table

    _accelerator(accelerator)
    if views is not None:
        from kinetoscope.evaluate.views import evaluate_views, views_table

        if reverse:
            raise ValueError("--views and --reverse cannot be combined")
        result = evaluate_views(run, views, fusion, data, split, name=name, crop=crop, resize=resize)
        out.print(metrics_table(result))
        out.print(views_table(result))
        return

    metrics = predict_run(run, data=data, split=split, reverse=reverse, name=name)
    out.print(detection_table(metrics) if metrics.get("task") == "detect_track" else metrics_table(metrics))


@app.command()
@user_errors
def compare(
    run_a: Annotated[Path, typer.Argument(help="First run directory (model 1).")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory (model 2).")],
    evaluation: Annotated[str, typer.Option(help="'val' (the runs' own predictions) or an evaluation name.")]
    = "val",
    level: Annotated[str, typer.Option(help="clip or video predictions.")] = "clip",
    alpha: float = 0.05,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result to this JSON file.")]
    = None,
) -> None:
    """McNemar's test between two runs on the same clips: contingency table, χ² and p-values."""
    from kinetoscope.evaluate.compare import compare_runs, comparison_table
    from kinetoscope.utils import atomic_write_json

    result = compare_runs(run_a, run_b, evaluation=evaluation, level=level, alpha=alpha)
    out.print(comparison_table(result))
    if json_out is not None:
        atomic_write_json(json_out, result)


@app.command()
@user_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    videos: Annotated[list[Path], typer.Argument(help="Video files to score.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("predictions"),
    window: Annotated[int | None, typer.Option(help="Frames per clip (default: the run's).")] = None,
    stride: Annotated[int | None, typer.Option(help="Frames between clip starts (default: the run's).")] = None,
    frame_aggregation: Annotated[str, typer.Option(help="Per-frame models: vote or mean.")] = "vote",
    top_fraction: Annotated[float, typer.Option(help="MIL filter: share of most confident clips.")] = 0.05,
    timeline_class: Annotated[str | None, typer.Option(help="Class whose score the timeline shows.")] = None,
    accelerator: Accelerator = None,
    render: Annotated[bool, typer.Option("--render", help="Also write annotated_<video>.mp4: top classes and "
                                                          "the score timeline over the video.")] = False,
) -> None:
    """Per-clip and per-video predictions for new videos, with a timeline plot per video."""
    from kinetoscope.suites.predict import predict_videos

    _accelerator(accelerator)
    results = predict_videos(run, videos, out_dir, window=window, stride=stride,
                             frame_aggregation=frame_aggregation, top_fraction=top_fraction,
                             timeline_class=timeline_class, render=render)
    out.print(f"predictions for {len(results)} video(s) in [bold]{out_dir}[/]")
    if len(results) < len(videos):
        out.print(f"[yellow]{len(videos) - len(results)} video(s) could not be read: see {out_dir / 'problems.csv'}[/]")


@app.command()
@user_errors
def features(
    source: Annotated[str, typer.Argument(help="A finished run directory or a registered model name.")],
    inputs: Annotated[list[Path], typer.Argument(help="A prepared dataset directory, or video files/folders.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory (one <video_id>.npy per video).")]
    = Path("features"),
    layer: Annotated[str | None, typer.Option(help="Layer name (default: the model's explain_layer); "
                                                   "`kinetoscope models info NAME --layers` lists them.")] = None,
    window: Annotated[int | None, typer.Option(help="Frames per window (default: the run's clip length).")] = None,
    stride: Annotated[int | None, typer.Option(help="Frames between window starts (default: the window).")] = None,
    pool: Annotated[str, typer.Option(help="mean, max (over space-time) or none (keep the map).")] = "mean",
    short: Annotated[str | None, typer.Option(help="Videos shorter than a window: pad or skip.")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split of a dataset directory.")] = None,
    shard: Annotated[str | None, typer.Option(help="i/n: only this shard of the videos (array jobs).")] = None,
    batch_size: int = 16,
    fps: Annotated[float | None, typer.Option(help="Decode video files at this rate (default: the run's).")]
    = None,
    size: Annotated[int | None, typer.Option(help="Decode video files to this shorter side.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Model option for a model name, "
                                                                       "e.g. --set hidden=16.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Recompute features that exist.")] = False,
) -> None:
    """Per-window features of every video at any layer; resumable and shardable."""
    from kinetoscope.features.run import extract_features

    result = extract_features(source, list(inputs), out_dir, layer, window=window, stride=stride, pool=pool,
                              short=short, split=split, shard=shard, batch_size=batch_size, fps=fps, size=size,
                              options=_settings(overrides) or None, overwrite=overwrite)
    out.print(f"features of {result['written']} video(s) written, {result['skipped_done']} already done, "
              f"{result['problems']} problem(s); layer {result['layer']} -> [bold]{out_dir}[/]")


@app.command()
@user_errors
def cv(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML run config (data with subjects).")],
    overrides: Overrides = None,
    protocol: Annotated[str, typer.Option(help="loso (leave-one-subject-out) or transfer.")] = "loso",
    repeats: Annotated[int, typer.Option(help="Repetitions with fresh random initialisation.")] = 1,
    workers: Annotated[int, typer.Option(help="Folds trained in parallel processes.")] = 1,
    threads: Annotated[int | None, typer.Option(help="Torch threads per fold.")] = None,
    val_subject: Annotated[list[str] | None, typer.Option(help="Validation subject(s) in priority order; "
                                                                "'next' = the next subject.")] = None,
    frame_aggregation: Annotated[str, typer.Option(help="Per-frame models: vote or mean.")] = "vote",
    top_fraction: Annotated[float, typer.Option(help="MIL filter: share of most confident clips.")] = 0.05,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory.")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Refuse to continue an existing run.")] = False,
    target: Annotated[Path | None, typer.Option(help="transfer: target dataset.")] = None,
    source_cv: Annotated[Path | None, typer.Option(help="transfer: cv directory fixing the epochs.")] = None,
    epochs: Annotated[int | None, typer.Option(help="transfer: epochs on the source.")] = None,
    finetune: Annotated[bool, typer.Option(help="transfer: also fine-tune the head on target folds.")] = True,
    accelerator: Accelerator = None,
    devices: Annotated[int | None, typer.Option(help="Devices per fold (train.devices).")] = None,
) -> None:
    """Cross-validation (leave-one-subject-out x repeats) or transfer, with per-fold tables and a report."""
    from kinetoscope.config import load_config

    if protocol not in ("loso", "transfer"):
        raise ValueError(f"--protocol {protocol!r}: use loso or transfer")
    transfer_only = {"--target": target is not None, "--source-cv": source_cv is not None,
                     "--epochs": epochs is not None, "--no-finetune": not finetune}
    misplaced = [name for name, given in transfer_only.items() if given] if protocol == "loso" else []
    if protocol == "transfer" and no_resume:
        misplaced.append("--no-resume")
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)} has no effect with --protocol {protocol}")
    _accelerator(accelerator)
    extra = list(overrides or [])
    extra += [f"train.accelerator={accelerator}"] if accelerator else []
    extra += [f"train.devices={devices}"] if devices else []
    run_config = load_config(config, extra)
    subjects = None if not val_subject else ("next" if val_subject == ["next"] else list(val_subject))
    if protocol == "loso":
        from kinetoscope.suites.cv import run_cv

        path = run_cv(run_config, protocol="loso", repeats=repeats, val_subject=subjects, out_dir=out_dir,
                      workers=workers, resume=not no_resume, frame_aggregation=frame_aggregation,
                      top_fraction=top_fraction, threads=threads)
        out.print(f"report: [bold]{Path(path) / 'report.html'}[/]")
    elif protocol == "transfer":
        from kinetoscope.suites.transfer import run_transfer

        if target is None:
            raise ValueError("--protocol transfer needs --target DATASET")
        result = run_transfer(run_config, target, source_cv=source_cv, epochs=epochs, out_dir=out_dir,
                              finetune=finetune, finetune_repeats=repeats, val_subject=subjects, workers=workers,
                              frame_aggregation=frame_aggregation, top_fraction=top_fraction, threads=threads)
        out.print(result)


@app.command()
@user_errors
def explain(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    method: Annotated[str, typer.Option(help="temporal-mask, gradcam, saliency-tubes, cfp, actmax; "
                                             "comma-separated or 'all'.")] = "temporal-mask",
    clips: Annotated[int, typer.Option(help="How many clips of the split to explain.")] = 4,
    video: Annotated[list[str] | None, typer.Option(help="Explain these video ids instead.")] = None,
    split: Annotated[str | None, typer.Option(help="Split to draw clips from (default: the run's val).")] = None,
    data: Annotated[Path | None, typer.Option(help="Another dataset to draw clips from.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory (default RUN/explanations).")]
    = None,
    stream: Annotated[str | None, typer.Option(help="Two-stream models: rgb or flow.")] = None,
    target: Annotated[str, typer.Option(help="Explain the predicted class or the label.")] = "predicted",
    options: Annotated[list[str] | None, typer.Option("--set", help="Method option, e.g. --set iterations=100.")]
    = None,
    accelerator: Accelerator = None,
    render: Annotated[str, typer.Option(help="Animation format: gif, or mp4 (MP4 beside the GIF).")] = "gif",
) -> None:
    """Temporal masks, Grad-CAM, saliency tubes, class feature pyramids, activation maximisation."""
    from kinetoscope.explain import explain_run

    _accelerator(accelerator)
    if render not in ("gif", "mp4"):
        raise ValueError(f"--render {render!r}: use gif or mp4")
    path = explain_run(run, method, list(video) if video else clips, split, data, out_dir, stream=stream,
                       target=target, mp4=render == "mp4", **_settings(options))
    out.print(f"explanations: [bold]{path}[/]  (index.csv, GIFs, contact sheets)")


def _settings(items: list[str] | None) -> dict:
    from kinetoscope.config import parse_override

    settings: dict = {}
    for item in items or []:
        keys, value = parse_override(item)
        node = settings
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return settings


@suite_app.command("temporal-shapes")
@user_errors
def suite_temporal_shapes(
    out_dir: Annotated[Path, typer.Option("--out", help="Study directory.")] = Path("runs/temporal-shapes"),
    family: Annotated[list[str] | None, typer.Option(help="Model families (default convlstm, cnn3d).")] = None,
    widths: Annotated[str | None, typer.Option(help="Comma-separated widths h, e.g. 2,4,8.")] = None,
    source: Annotated[str, typer.Option(help="Training domain: 2dot or mnist-bg.")] = "2dot",
    scale: Annotated[str, typer.Option(help="small (2 CPU cores) or paper (the seed's sizes).")] = "small",
    seed: int = 0,
    settings: Annotated[list[str] | None, typer.Option("--set", help="Override a scale setting, "
                                                                      "e.g. --set train_num=1000.")] = None,
    overwrite: bool = False,
    accelerator: Accelerator = None,
    digits: Annotated[Path | None, typer.Option(help="Directory with MNIST IDX files for the MNIST domains "
                                                     "(default $KINETOSCOPE_MNIST, else scikit-learn's "
                                                     "bundled digits).")] = None,
) -> None:
    """The Temporal Shapes cross-domain study (Broomé 2022 §5.3): accuracy and rr per family and width."""
    _accelerator(accelerator)
    from kinetoscope.suites.temporal_shapes import run_temporal_shapes_study

    width_list = [int(w) for w in widths.split(",")] if widths else None
    report = run_temporal_shapes_study(out_dir, tuple(family) if family else ("convlstm", "cnn3d"), width_list,
                                       source, scale, seed, settings=_settings(settings) or None,
                                       overwrite=overwrite, digits=digits)
    out.print(f"report: [bold]{report}[/]")


@suite_app.command("reversal")
@user_errors
def suite_reversal(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Suite directory.")] = Path("runs/reversal"),
    data: Annotated[Path | None, typer.Option(help="Evaluate on this dataset instead of each run's val.")] = None,
    split: str | None = None,
    recompute: bool = False,
    accelerator: Accelerator = None,
) -> None:
    """Accuracy on original vs time-reversed clips, per run."""
    _accelerator(accelerator)
    from kinetoscope.suites.reversal import run_reversal_suite

    out.print(f"report: [bold]{run_reversal_suite(runs, out_dir, data=data, split=split, recompute=recompute)}[/]")


@suite_app.command("shape-texture")
@user_errors
def suite_shape_texture(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    domains: Annotated[Path, typer.Option(help="Root written by `kinetoscope synth domains`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Suite directory.")] = Path("runs/shape-texture"),
    split: str | None = None,
    recompute: bool = False,
    accelerator: Accelerator = None,
) -> None:
    """S1/V, S2/V, T/V and T/S1 per run (Broomé 2022, Diving48 domains)."""
    _accelerator(accelerator)
    from kinetoscope.suites.reversal import run_shape_texture_suite

    report = run_shape_texture_suite(runs, domains, out_dir, split=split, recompute=recompute)
    out.print(f"report: [bold]{report}[/]")


@suite_app.command("appearance-free")
@user_errors
def suite_appearance_free(
    data: Annotated[Path, typer.Argument(help="A dataset directory (RGB).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Suite directory.")] = Path("runs/appearance-free"),
    model: Annotated[list[str] | None, typer.Option(help="Models to train (default cnn3d, convlstm).")] = None,
    af_data: Annotated[Path | None, typer.Option(help="An existing appearance-free version of DATA.")] = None,
    flow: Annotated[str, typer.Option(help="Flow method (auto: raft if imported, else the fallback).")] = "auto",
    mode: str = "first-frame",
    placement: str = "splat",
    grayscale: bool = False,
    network_probe: Annotated[bool, typer.Option(help="Also run the single-frame 2D ResNet probes (frames, "
                                                     "appearance-free frames, flow images).")] = False,
    settings: Annotated[list[str] | None, typer.Option("--set", help="Model options (cnn3d.hidden=8) or "
                                                                      "training (train.max_epochs=5).")] = None,
    seed: int = 0,
    accelerator: Accelerator = None,
) -> None:
    """Accuracy on RGB vs appearance-free versions of a dataset, per model, with Δ (Ilic 2024 Table 4.1)."""
    _accelerator(accelerator)
    from kinetoscope.suites.appearance_free import run_appearance_free_suite

    parsed = _settings(settings)
    train = parsed.pop("train", None)
    report = run_appearance_free_suite(data, out_dir, models=tuple(model) if model else ("cnn3d", "convlstm"),
                                       af_data=af_data, model_options=parsed or None, train=train,
                                       flow_method=flow, mode=mode, placement=placement, grayscale=grayscale,
                                       network_probe=network_probe, seed=seed)
    out.print(f"report: [bold]{report}[/]")


@suite_app.command("privacy")
@user_errors
def suite_privacy(
    data: Annotated[Path, typer.Argument(help="A dataset with subjects (KTH-style).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Suite directory.")] = Path("runs/privacy"),
    action_model: Annotated[str, typer.Option(help="Model name to train, or a finished run directory.")] = "cnn3d",
    identity_model: Annotated[str, typer.Option(help="Model name to train, a finished run directory, or "
                                                     "frame-resnet (2D ResNet on single frames).")] = "cnn3d",
    method: Annotated[list[str] | None, typer.Option(help="motion-noise, iid-noise, mask, pixelate-4, pixelate-16, "
                                                          "blur-weak, blur-strong (default: all possible).")] = None,
    templates: Annotated[str, typer.Option(help="Comma-separated template names.")] = "torso,arm,leg,hair",
    library: Annotated[Path | None, typer.Option(help="Template library (JSON) for the noise methods.")] = None,
    extractor: Annotated[str, typer.Option(help="Key extractor of the templates: dino or colour.")] = "dino",
    weights: Annotated[Path | None, typer.Option(help="DINO ViT-S/8 .safetensors.")] = None,
    stride: Annotated[int, typer.Option(help="DINO patch-embedding stride.")] = 4,
    masks: Annotated[Path | None, typer.Option(help="Directory of <video_id>.npy person masks (mask method).")]
    = None,
    flow: str = "farneback",
    resplit: Annotated[bool, typer.Option(help="KTH-style split: per subject and action, the last video is val.")]
    = False,
    lam: Annotated[float, typer.Option("--lambda", help="λ of f_λ = (1-λ)·action + λ·(1-identity).")] = 0.5,
    settings: Annotated[list[str] | None, typer.Option("--set", help="Model options (cnn3d.hidden=8) or "
                                                                      "training (train.max_epochs=5).")] = None,
    seed: int = 0,
) -> None:
    """Action vs identity accuracy per obfuscation method, with f_λ (Ilic 2024 Table 5.2)."""
    from kinetoscope.suites.privacy import run_privacy_suite

    key_extractor = None
    if library is not None:
        from kinetoscope.models.dino_vit import make_key_extractor

        key_extractor = make_key_extractor(extractor, weights, stride)
    parsed = _settings(settings)
    train = parsed.pop("train", None)
    report = run_privacy_suite(data, out_dir, action_model=action_model, identity_model=identity_model,
                               methods=tuple(method) if method else None, library=library,
                               templates=tuple(n.strip() for n in templates.split(",") if n.strip()),
                               extractor=key_extractor, masks_dir=masks, flow_method=flow, resplit=resplit,
                               model_options=parsed or None, train=train, lam=lam, seed=seed)
    out.print(f"report: [bold]{report}[/]")


# -------------------------------------------------------------------------------------------- models
@models_app.command("list")
@user_errors
def models_list(
    input: Annotated[str, typer.Option("--input", help="C x T x H x W of one clip for the FLOP column.")]
    = "3x16x112x112",
    names_only: Annotated[bool, typer.Option("--names", help="Only the names, one per line.")] = False,
) -> None:
    """Registered models with parameters and FLOPs (counted on the meta device: no compute)."""
    from kinetoscope.models import list_models

    if names_only:
        for name in list_models():
            out.print(name)
        return
    from kinetoscope.models.profile import format_profile_list, list_profiles

    out.print(format_profile_list(list_profiles(input_shape=_parse_input(input))))


def _parse_input(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input {text!r} must look like 3x16x112x112 (C x T x H x W)") from None
    if len(shape) != 4:
        raise ValueError(f"--input {text!r} must have 4 numbers: C x T x H x W")
    return shape  # type: ignore[return-value]


@models_app.command("info")
@user_errors
def models_info(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    input: Annotated[str, typer.Option("--input", help="C x T x H x W of one clip.")] = "3x16x112x112",
    num_classes: int = 400,
    latency: bool = True,
    layers: Annotated[bool, typer.Option("--layers", help="List the named layers (for `features --layer`) "
                                                           "with their output shapes.")] = False,
) -> None:
    """Parameters, FLOPs, activation memory and CPU latency of one model."""
    from kinetoscope.models.profile import format_profile, profile_model

    if layers:
        from kinetoscope.features.run import layer_table

        out.print(layer_table(name, _parse_input(input), num_classes=num_classes))
        return
    out.print(format_profile(profile_model(name, input_shape=_parse_input(input), num_classes=num_classes,
                                           latency=latency)))


@models_app.command("import")
@user_errors
def models_import(
    name: Annotated[str, typer.Argument(help="Model name, e.g. r2plus1d_18, x3d_s, or raft_large / raft_small "
                                              "(optical flow; written to the cache flow method raft reads).")],
    file: Annotated[Path, typer.Argument(help="Checkpoint file of the other library.")],
    source: Annotated[
        str, typer.Option("--from", help="torchvision, pytorchvideo, dino or pytorch-i3d.")
    ] = "torchvision",
    out_path: Annotated[Path | None, typer.Option("--out", help="Output .safetensors file.")] = None,
) -> None:
    """Import weights from torchvision / PyTorchVideo / DINO / pytorch-i3d checkpoints into a .safetensors file."""
    from kinetoscope.models.weights import default_output_path, import_weights

    _, report = import_weights(source, name, file, out_path or default_output_path(file, name))
    out.print(report)


@models_app.command("pull")
@user_errors
def models_pull(
    name: Annotated[str | None, typer.Argument(help="Published weights, e.g. torchvision:r2plus1d_18.")] = None,
    list_names: Annotated[bool, typer.Option("--list", help="List the published weights known.")] = False,
) -> None:
    """Download published weights once (SHA-256 checked), convert them, keep them in the cache.

    Use the name as train.init_from. Offline: `models import FILE` converts a file obtained elsewhere."""
    from kinetoscope.models.pretrained import catalogue_rows, pull

    if list_names or name is None:
        from rich.table import Table

        table = Table("name", "trained on", "input", "check", "cached")
        for row in catalogue_rows():
            table.add_row(row["name"], row["trained on"], str(row["input"]), row["check"],
                          "yes" if row["cached"] else "")
        out.print(table)
        return
    path, note = pull(name)
    out.print(note, highlight=False, markup=False)
    out.print(f"weights: [bold]{path}[/]  (train.init_from: {name})")


@data_app.command("import-vid")
@user_errors
def data_import_vid(
    source: Annotated[Path, typer.Argument(help="ImageNet VID root (holding Data/VID and Annotations/VID).")],
    out_dir: Annotated[Path, typer.Argument(help="Output detection dataset directory.")],
    split: Annotated[str, typer.Option(help="train or val.")] = "val",
    short_side: Annotated[int | None, typer.Option(help="Resize frames to this short side (the document: 600).")]
    = None,
    max_videos: Annotated[int | None, typer.Option(help="Convert only the first N snippets.")] = None,
) -> None:
    """Convert ImageNet VID snippets (JPEG + XML per frame) into a kinetoscope detection dataset."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.objects import import_imagenet_vid

    path = import_imagenet_vid(source, out_dir, split, short_side=short_side, max_videos=max_videos)
    problems = DatasetStore(path).problems()
    out.print(f"wrote [bold]{path}[/]" + (f"  [yellow]{len(problems)} problem(s): see {path / 'problems.csv'}[/]"
                                          if problems else ""))


@app.command("export")
@user_errors
def export_cmd(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    format: Annotated[str, typer.Option("--format", help="torchscript, onnx or exported-program.")]
    = "torchscript",
    out_path: Annotated[Path | None, typer.Option("--out", help="Output file (default RUN/export/model.*).")]
    = None,
    tolerance: Annotated[float, typer.Option(help="Largest |exported - eager| accepted on the check clip.")]
    = 1e-4,
) -> None:
    """Export a trained model, reload it and check it against the eager model on a real clip."""
    from kinetoscope.models.export import export_run

    result = export_run(run, format, out_path, tolerance)
    out.print(f"{result['model']} as {result['format']}: [bold]{result['path']}[/]  "
              f"max |diff| vs eager on a real clip {result['max_abs_diff']:.3g} (tolerance {tolerance:g})")


# -------------------------------------------------------------------------------------------- report
@app.command()
@user_errors
def report(run: Annotated[Path, typer.Argument(help="A run or demo/suite directory.")]) -> None:
    """(Re)build report.html for a run or a suite."""
    from kinetoscope.report.html import build_report

    out.print(f"report: [bold]{build_report(run)}[/]")


def main() -> None:
    app(prog_name="kinetoscope")


if __name__ == "__main__":
    sys.exit(main())
