"""``kinetoscope suite privacy``: the privacy–utility protocol of Ilic 2024 §5.4 (Table 5.2).

1. Two recognisers are trained on **clean** videos (or taken from existing runs): an action recogniser
   (labels = actions) and an identity recogniser (labels = subjects, the KTH privacy attribute) — a
   video model, or ``frame-resnet``: a 2D ResNet on single frames as in the thesis (ResNet50 there),
   whose accuracy is the share of correct frames over up to 32 frames per video (§5.4). Neither
   is ever trained on obfuscated videos (§5.4: "we never perform any training on videos obfuscated by
   our approach").
2. Identity recognition needs every subject in both splits. KTH's official split is by person, so the
   thesis re-splits it; ``resplit=True`` does the same here: per (subject, action), the last video (by
   id) goes to ``val`` and the others to ``train``.
3. The evaluation split is obfuscated with every method (:mod:`kinetoscope.synth.privacy`:
   ``motion-noise``, ``iid-noise``, ``mask``, ``pixelate-4|16``, ``blur-weak|strong``), and both
   recognisers are tested on the clean and on each obfuscated version.
4. Per method: action accuracy ``a`` (↑), identity accuracy ``p`` (↓) and
   ``f_λ(a, p) = (1−λ)·a + λ·(1−p)`` (λ = 0.5 in the thesis), a table, a scatter plot and ``report.html``.

Data views (re-split, identity labels) link the source frames instead of copying them. Re-running
resumes: runs, obfuscated datasets and views with the same settings are reused.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text

SALIENCY_METHODS = ("motion-noise", "iid-noise")
FRAME_IDENTITY = "frame-resnet"  # the thesis' identity recogniser: a 2D ResNet on single frames
FRAME_DEFAULTS: dict[str, Any] = {"depth": 18, "epochs": 10, "frames_per_video": 8, "test_frames": 32,
                                  "batch_size": 32, "lr": 1e-3}
ALL_METHODS = ("motion-noise", "iid-noise", "mask", "pixelate-4", "pixelate-16", "blur-weak", "blur-strong")


def f_lambda(action: float, identity: float, lam: float = 0.5) -> float:
    """Ilic 2024 §5.4: ``f_λ(a, p) = (1−λ)·a + λ·(1−p)`` with accuracies as fractions."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"λ must lie in [0, 1], got {lam}")
    return (1.0 - lam) * float(action) + lam * (1.0 - float(identity))


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]privacy[/] {message}", highlight=False)


def _link_frames(source: Path, out: Path) -> None:
    link = out / "frames"
    target = (source / "frames").resolve()
    if link.is_symlink() and link.resolve() == target:
        return
    if link.is_symlink() or link.exists():
        raise FileExistsError(f"{link} exists and is not a link to {target}; remove {out} to rebuild the view")
    out.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link, target_is_directory=True)


def data_view(src_root: str | Path, out_root: str | Path, *, by: str = "action", resplit: bool = False) -> Path:
    """A view of a dataset with the same frames (linked): labels by ``action`` (as stored) or by
    ``subject`` (identity); with ``resplit`` the KTH-style split of step 2. Returns ``out_root``."""
    from kinetoscope.data.cache import DatasetStore

    if by not in ("action", "subject"):
        raise ValueError(f"by must be 'action' or 'subject', got {by!r}")
    source = DatasetStore(src_root)
    meta, records = source.meta(), source.records()
    if by == "subject":
        unnamed = [r.video_id for r in records if not r.subject]
        if unnamed:
            raise ValueError(f"{source.annotations_path}: videos without a subject cannot be used for identity "
                             f"recognition: {unnamed[:10]}{' ...' if len(unnamed) > 10 else ''}")
    if resplit:
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in records:
            groups[(r.subject, r.label)].append(r)
        new = {}
        for members in groups.values():
            members = sorted(members, key=lambda r: r.video_id)
            for i, r in enumerate(members):
                new[r.video_id] = replace(r, split="val" if len(members) > 1 and i == len(members) - 1 else "train")
        records = [new[r.video_id] for r in records]
    if by == "subject":
        records = [replace(r, label=r.subject) for r in records]
        classes = sorted({r.subject for r in records})
    else:
        classes = meta.get("classes") or sorted({r.label for r in records})
    out = Path(out_root)
    _link_frames(source.root, out)
    view = DatasetStore(out)
    view.write_records(records)
    view.write_meta({**meta, "name": f"{meta.get('name', source.root.name)}" + ("-identity" if by == "subject" else ""),
                     "classes": classes, "view_of": str(source.root), "view": {"by": by, "resplit": resplit}})
    return out


def _check_subjects_in_both(root: Path) -> None:
    from kinetoscope.data.cache import DatasetStore

    records = DatasetStore(root).records()
    train = {r.subject for r in records if r.split == "train"}
    val = {r.subject for r in records if r.split == "val"}
    if not val:
        raise ValueError(f"{root}: no 'val' videos to evaluate on; pass resplit=True (CLI: --resplit)")
    unseen = sorted(val - train)
    if unseen:
        raise ValueError(f"{root}: subjects {unseen} have no training videos, so identity cannot be recognised; "
                         "pass resplit=True (CLI: --resplit) for a KTH-style split with every subject in train and val")


def _run_or_model(spec: str) -> Path | None:
    path = Path(spec)
    if path.is_dir():
        if not (path / "model.safetensors").is_file() or not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path} is not a finished run (model.safetensors and config.yaml needed)")
        return path
    return None


def _frame_identity(out_dir: Path, identity_root: Path, options: dict[str, Any], seed: int) -> Any:
    """Train (or reuse) the single-frame identity recogniser on the training split of ``identity_root``."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.evaluate.leakage import FrameClassifier, probe_images, train_frame_classifier

    path = out_dir / "runs" / FRAME_IDENTITY / "model.safetensors"
    wanted = json.dumps({"data": str(identity_root), "seed": seed, **options}, sort_keys=True)
    if path.is_file():
        from kinetoscope.models.weights import safetensors_metadata

        if safetensors_metadata(path).get("settings") == wanted:
            return FrameClassifier.load(path, options["depth"])
    store = DatasetStore(identity_root)
    _log(f"training the single-frame identity recogniser ({FRAME_IDENTITY}-{options['depth']})")
    images, labels = probe_images(store, store.records("train"), "frames", options["frames_per_video"],
                                  np.random.default_rng(seed))
    classifier = train_frame_classifier(images, labels, store.classes, depth=options["depth"],
                                        epochs=options["epochs"], batch_size=options["batch_size"], lr=options["lr"],
                                        seed=seed)
    classifier.save(path, {"settings": wanted})
    return classifier


def _frame_accuracy(classifier: Any, identity_root: Path, frames: int, seed: int) -> float:
    """Share of correctly recognised frames, over up to ``frames`` random frames of each ``val`` video."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.evaluate.leakage import probe_images

    store = DatasetStore(identity_root)
    images, labels = probe_images(store, store.records("val"), "frames", frames, np.random.default_rng(seed))
    truth = np.asarray([classifier.classes.index(store.classes[i]) for i in labels])
    return float((classifier.predict(images) == truth).mean())


def run_privacy_suite(
    data: str | Path,
    out_dir: str | Path = "runs/privacy",
    *,
    action_model: str = "cnn3d",
    identity_model: str = "cnn3d",
    methods: Sequence[str] | None = None,
    library: str | Path | None = None,
    templates: Sequence[str] = ("torso", "arm", "leg", "hair"),
    extractor: Any = None,
    masks_dir: str | Path | None = None,
    flow_method: str = "farneback",
    resplit: bool = False,
    model_options: dict[str, dict[str, Any]] | None = None,
    train: dict[str, Any] | None = None,
    lam: float = 0.5,
    seed: int = 0,
) -> Path:
    """Run (or resume) the privacy–utility protocol; returns the path of ``report.html``.

    ``data``: a dataset with subjects. ``action_model`` / ``identity_model``: a registered model name to
    train, or the directory of a finished run to take. ``methods``: labels of
    :meth:`ObfuscationSettings.from_label` (default: every method whose inputs are given — the noise
    methods need ``library`` and ``extractor``, ``mask`` needs ``masks_dir``). ``model_options``: per
    model name; ``train``: overrides of the training defaults of the appearance-free suite."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.report.html import build_report
    from kinetoscope.report.suites import privacy_section, privacy_tradeoff_plot
    from kinetoscope.suites.appearance_free import TRAIN_DEFAULTS, train_suite_run
    from kinetoscope.synth.privacy import ObfuscationSettings, make_obfuscated_dataset

    f_lambda(0.0, 0.0, lam)  # λ checked before any work
    frame_options = {**FRAME_DEFAULTS, **(model_options or {}).get(FRAME_IDENTITY, {})}
    stray = sorted(set(frame_options) - set(FRAME_DEFAULTS))
    if stray:
        raise ValueError(f"unknown {FRAME_IDENTITY} option(s) {stray}; accepted: {', '.join(FRAME_DEFAULTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(train or {}) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train setting(s) {unknown}; accepted: {', '.join(TRAIN_DEFAULTS)}")
    notes: list[str] = []
    if methods is None:
        methods = [m for m in ALL_METHODS
                   if (m not in SALIENCY_METHODS or (library is not None and extractor is not None))
                   and (m != "mask" or masks_dir is not None)]
        skipped = sorted(set(ALL_METHODS) - set(methods))
        if skipped:
            notes.append(f"not run (inputs not given): {', '.join(skipped)}")
    settings = {m: ObfuscationSettings.from_label(m, templates=tuple(templates), flow_method=flow_method, seed=seed)
                for m in methods}  # unknown labels fail before any work
    train_settings = {**TRAIN_DEFAULTS, **(train or {})}

    clean = data_view(data, out_dir / "data" / "clean", resplit=resplit)
    identity = data_view(clean, out_dir / "data" / "clean-identity", by="subject")
    _check_subjects_in_both(identity)

    runs: dict[str, Path] = {}
    frame_identity = None
    for role, spec, root in (("action", action_model, clean), ("identity", identity_model, identity)):
        if role == "identity" and spec == FRAME_IDENTITY:
            frame_identity = _frame_identity(out_dir, identity, frame_options, seed)
            notes.append(f"identity recogniser: {FRAME_IDENTITY}-{frame_options['depth']} on single frames "
                         f"(accuracy over up to {frame_options['test_frames']} frames per video)")
            continue
        taken = _run_or_model(spec)
        if taken is not None:
            _log(f"{role} recogniser: taking the run {taken}")
            runs[role] = taken
        else:
            options = dict((model_options or {}).get(spec, {}))
            runs[role] = train_suite_run(out_dir, role, root, spec, options, train_settings, seed)

    versions: dict[str, tuple[Path, Path]] = {"clean": (clean, identity)}
    problems: dict[str, list[tuple[str, str]]] = {}
    for label, method_settings in settings.items():
        _log(f"obfuscating the evaluation split: {label}")
        root = make_obfuscated_dataset(clean, out_dir / "data" / label, method_settings, library=library,
                                       extractor=extractor if method_settings.needs_saliency else None,
                                       masks_dir=masks_dir, split="val")
        found = DatasetStore(root).problems()
        if found:
            problems[label] = found
            notes.append(f"{label}: {len(found)} video(s) left out, see data/{label}/problems.csv")
        versions[label] = (root, data_view(root, out_dir / "data" / f"{label}-identity", by="subject"))

    rows = []
    for label, (action_root, identity_root) in versions.items():
        action = predict_run(runs["action"], data=action_root, split="val", name=f"privacy-{label}")["accuracy"]
        if frame_identity is not None:
            ident = _frame_accuracy(frame_identity, identity_root, frame_options["test_frames"], seed)
        else:
            ident = predict_run(runs["identity"], data=identity_root, split="val",
                                name=f"privacy-{label}")["accuracy"]
        rows.append({"method": label, "action": float(action), "identity": float(ident),
                     "f": f_lambda(action, ident, lam)})
    table = [[r["method"], r["action"], r["identity"], r["f"]] for r in rows]
    atomic_write_text(out_dir / "table.csv", csv_text(["method", "action", "identity", f"f{lam:g}"], table))
    n_actions = len(DatasetStore(clean).classes)
    n_subjects = len(DatasetStore(identity).classes)
    chance = (1.0 / max(1, n_actions), 1.0 / max(1, n_subjects))
    figure = privacy_tradeoff_plot(rows, out_dir / "figures" / "privacy_tradeoff.png", chance)
    atomic_write_text(out_dir / "sections" / "privacy.html", privacy_section(rows, figure, lam, notes))
    rel = {role: os.path.relpath(path, out_dir) for role, path in runs.items()}
    atomic_write_json(out_dir / "study.json", {
        "kind": "privacy",
        "title": "Privacy–utility trade-off of video obfuscation",
        "intro": ("Ilic 2024 §5.4: hide who is in a video while keeping what they do. An action recogniser and "
                  "an identity recogniser, both trained on clean videos, are tested on each obfuscated version "
                  f"of the evaluation split. Data: {data} ({n_actions} actions, {n_subjects} subjects)."),
        "sections": ["sections/privacy.html"],
        "runs": rel,
        "columns": [[f"privacy-{label}", label] for label in versions],
        "chance": None,
        "rows": rows,
        "lambda": lam,
        "notes": notes,
        "settings": {"action_model": action_model, "identity_model": identity_model, "methods": list(methods),
                     "templates": list(templates), "library": str(library) if library else None,
                     "extractor": getattr(extractor, "extractor_id", None), "masks_dir": str(masks_dir or ""),
                     "flow_method": flow_method, "resplit": resplit, "train": train_settings, "seed": seed,
                     "model_options": model_options or {}},
    })
    return build_report(out_dir)


__all__ = ["ALL_METHODS", "data_view", "f_lambda", "run_privacy_suite"]
