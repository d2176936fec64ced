"""``kinetoscope demo``: the Temporal Shapes cross-domain study of Broomé 2022 (§5.3) in miniature.

1. generate a 2Dot training set (random train/val split) and 5Dot, MNIST and MNIST-bg test sets;
2. train the ``cnn3d`` and ``convlstm`` families (same width);
3. evaluate both on the validation split, on every other domain (rr = target acc / best val acc)
   and on the validation split with every clip reversed;
4. write ``report.html`` (results table, rr, training curves, confusion matrices, sample GIFs).

Each step is skipped when its output already exists, so an interrupted demo resumes where it
stopped. Sizes are chosen so that both models clearly beat chance (20 %) within minutes on 2 CPU
cores; the paper trains 4,000 clips for up to 100 epochs, which the ``suite`` command reproduces.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from kinetoscope.utils import atomic_write_json

DOMAINS = ["2dot", "5dot", "mnist", "mnist-bg"]

SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "train_num": 2000,
        "eval_num": 300,
        "size": 32,
        "frames": 20,
        "hidden": 8,
        "max_epochs": 12,
        # no early stop, cosine lr: at this scale the ConvLSTM's val accuracy swings by 30 points between
        # middle epochs at a constant lr (seed 0: 81 % at epoch 1, 46 % at 3, 95 % at 10; patience 5 once
        # stopped it at 81 %). The cosine's small late steps settle it; the best checkpoint is kept.
        "patience": 12,
        "batch_size": 32,
        "lr": 2e-3,
        "explain_clips": 4,
        "mask_iterations": 300,
    },
    "quick": {
        "train_num": 200,
        "eval_num": 50,
        "size": 32,
        "frames": 20,
        "hidden": 4,
        "max_epochs": 2,
        "patience": 2,
        "batch_size": 32,
        "lr": 3e-3,
        "explain_clips": 2,
        "mask_iterations": 30,
    },
}


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]demo[/] {message}", highlight=False)


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, seed: int = 0, overwrite: bool = False,
             *, digits: str | Path | None = None) -> Path:
    """Run (or resume) the demo; returns the path of ``report.html``. ``digits``: a directory of MNIST IDX
    files for the MNIST domains (default ``$KINETOSCOPE_MNIST``, else scikit-learn's bundled digits)."""
    import torch

    from kinetoscope.config import build_config
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.explain import explain_run
    from kinetoscope.report.html import build_report
    from kinetoscope.suites.temporal_shapes import digits_note
    from kinetoscope.synth import generate_temporal_shapes
    from kinetoscope.synth.digits import resolve_digits_source
    from kinetoscope.train import fit

    settings = SETTINGS["quick" if quick else "full"]
    # Small models: one intra-op thread avoids OpenMP spin-waiting (docs/performance.md).
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    marker = out_dir / "study.json"
    digits = resolve_digits_source(digits)
    wanted_settings = {**settings, "seed": seed, **({"digits": digits} if digits else {})}
    if out_dir.exists() and any(out_dir.iterdir()):
        previous = json.loads(marker.read_text()).get("settings") if marker.is_file() else None
        if previous is None and not overwrite:
            raise FileExistsError(f"{out_dir} is not empty and is not a demo directory; pass --overwrite "
                                  "or choose another --out")
        if overwrite or previous != wanted_settings:
            shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_json(marker, {"title": "kinetoscope demo (in progress)", "runs": {},
                                   "settings": wanted_settings})
    timings: dict[str, float] = {}

    # 1. data --------------------------------------------------------------------------------
    started = time.perf_counter()
    data_dirs = {d: out_dir / "data" / d for d in DOMAINS}
    for domain, path in data_dirs.items():
        if DatasetStore(path).exists():
            continue
        train_domain = domain == DOMAINS[0]
        _log(f"generating {domain} ({'train/val' if train_domain else 'test'})")
        generate_temporal_shapes(
            path,
            domain=domain,
            num=settings["train_num"] if train_domain else settings["eval_num"],
            split="trainval" if train_domain else "test",
            seed=seed + DOMAINS.index(domain),
            size=settings["size"],
            frames=settings["frames"],
            digits=digits,
            overwrite=True,
            gifs=5,
        )
    timings["data_seconds"] = round(time.perf_counter() - started, 1)

    # 2-3. train and evaluate each family ----------------------------------------------------
    runs = {}
    for family in ("cnn3d", "convlstm"):
        run_dir = out_dir / family
        runs[family] = family
        started = time.perf_counter()
        if not (run_dir / "model.safetensors").is_file():
            resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
            _log(f"training {family} (h={settings['hidden']})" + (" — resuming" if resume else ""))
            config = build_config({
                "name": family,
                "out_dir": str(out_dir),
                "data": {"root": str(data_dirs["2dot"]), "batch_size": settings["batch_size"]},
                "model": {"name": family, "hidden": settings["hidden"]},
                "optim": {"name": "adam", "lr": settings["lr"], "weight_decay": 1e-5, "schedule": "cosine"},
                "train": {"max_epochs": settings["max_epochs"], "patience": settings["patience"], "seed": seed,
                          "threads": 1},
            })
            fit(config, overwrite=not resume, resume=resume)
        timings[f"{family}_train_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        done = json.loads((run_dir / "summary.json").read_text()).get("evaluations", {})
        wanted = {"val": {}, "val-reversed": {"reverse": True}}
        wanted.update({d: {"data": data_dirs[d], "name": d} for d in DOMAINS[1:]})
        for name, kwargs in wanted.items():
            if name not in done:
                _log(f"evaluating {family} on {name}")
                predict_run(run_dir, **kwargs)
        timings[f"{family}_eval_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        if not (run_dir / "explanations" / "index.csv").is_file():
            _log(f"explaining {settings['explain_clips']} {family} clips (temporal mask + Grad-CAM)")
            # the paper protocol (fixed iterations, no early stop): the report compares the two families' masks
            explain_run(run_dir, "temporal-mask,gradcam", clips=settings["explain_clips"], protocol="paper",
                        iterations=settings["mask_iterations"])
        timings[f"{family}_explain_seconds"] = round(time.perf_counter() - started, 1)

    # 4. report ------------------------------------------------------------------------------
    previews = {
        d: sorted(str(p.relative_to(out_dir)) for p in (data_dirs[d] / "previews").glob("*.gif"))
        for d in DOMAINS
    }
    study = {
        "title": "kinetoscope demo — Temporal Shapes across domains",
        "intro": (
            "Two model families of the frame-dependency study (Broomé 2022 §5.3) are trained on "
            "<b>2Dot</b> Temporal Shapes, where the class is only the trajectory of a moving dot (circle, "
            "line, arc, spiral, rectangle), and tested on domains whose appearance differs but whose "
            "motion does not: 5Dot, MNIST digits and MNIST digits over moving Perlin noise. "
            "Reversing the frames of a clip tells whether a model relies on temporal order. "
            f"Demo scale: {settings['train_num']} generated 2Dot clips (80/20 train/val) of "
            f"{settings['frames']} frames at {settings['size']}×{settings['size']} pixels, "
            f"{settings['eval_num']} per test domain, width h={settings['hidden']}, up to "
            f"{settings['max_epochs']} epochs with Adam and a cosine learning rate; the paper used 5,000 clips "
            "at 64×64, h in 1…48 and "
            "SGD for up to 100 epochs (<code>kinetoscope suite temporal-shapes --scale paper</code>)."
        ) + digits_note(data_dirs),
        "runs": runs,
        "columns": [["val", "2Dot (val)"], ["val-reversed", "2Dot reversed"], ["5dot", "5Dot"],
                    ["mnist", "MNIST"], ["mnist-bg", "MNIST-bg"]],
        "chance": 0.2,
        "previews": previews,
        "settings": wanted_settings,
        "timings": timings,
    }
    atomic_write_json(marker, study)
    report = build_report(out_dir)
    _log(f"done; report at {report}")
    return report
