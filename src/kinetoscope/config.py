"""Typed run configuration: pydantic schemas, YAML loading and ``--set a.b=c`` overrides.

A config is one YAML file (no inheritance chains). Every section forbids unknown keys, so a typo is
an error that names the key; ``model`` is the exception: besides ``name`` it carries the model's
own options, which ``kinetoscope.models.create_model`` checks against the builder's signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    root: Path = Field(description="dataset directory: annotations.csv + frame cache")
    train_split: str = "train"
    val_split: str | None = Field("val", description="None = no validation: train max_epochs, keep the last")
    test_split: str | None = None
    frames: int | None = Field(None, description="frames per clip (uniformly sampled); None = all")
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    sampling: Literal["uniform", "dense", "all"] | None = Field(
        None, description="clip sampling (data/sampling.py); None = uniform with frames, else all")
    stride: int | None = Field(None, ge=1, description="dense windows: frames between starts")
    oversample: bool = Field(False, description="Broomé 2022 extra minority-class windows (dense sampling)")
    flow: bool = Field(False, description="load cached optical flow (implied by two-stream models)")
    size: int | None = Field(
        None, ge=1, description="square crop side fed to the model: training draws a random resized crop "
        "(with augment), evaluation resizes to cover it and takes the centre; None = frames as cached")
    augment: bool = Field(False, description="training clips get a random resized crop (needs size), a "
                          "horizontal flip (negating flow u) and colour jitter, one draw per clip")
    crop_scale: tuple[float, float] = Field((0.25, 1.0), description="random resized crop: area fraction range")
    color_jitter: float = Field(0.1, ge=0, le=1, description="brightness/contrast/saturation factor range ±x")
    shading: float = Field(0.0, ge=0, description="std of one Gaussian noise field added to every frame "
                           "(Broomé 2022 §3.2 shading); 0 = off")
    jitter: bool = Field(False, description="temporal jitter: training clips re-draw their frame positions "
                         "on every access (segment-random uniform frames, shifted dense windows)")
    frame_rate_jitter: tuple[int, int] | None = Field(
        None, description="[lo, hi]: training clips space their frames by a random stride tau in lo..hi "
        "from a random start (Feichtenhofer 2017 Ch. 3); needs frames")
    normalize: Literal["auto", "imagenet", "kinetics", "dataset", "none"] | tuple[list[float], list[float]] = Field(
        "auto", description="RGB standardisation: imagenet, kinetics, none, [mean, std] lists of one value per "
        "channel, or dataset (the training part's own statistics, Broomé 2022 §3.3); auto = the recipe of the "
        "init_from weights, else none. Resolved to numbers in the run's config.yaml")
    flow_normalize: Literal["none", "minmax"] = Field(
        "none", description="minmax: each flow frame scaled to [0, 1] over all channels, in 1/255 steps "
        "(Broomé 2022 §3.3: flow stored as 0-255 images, divided by 255)")
    @field_validator("normalize")
    @classmethod
    def _mean_std(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            mean, std = value
            if not mean or len(mean) != len(std):
                raise ValueError(f"[mean, std] need one value per channel each, got {len(mean)} and {len(std)}")
            if min(std) <= 0:
                raise ValueError(f"std values must be positive, got {std}")
        return value

    @field_validator("frame_rate_jitter")
    @classmethod
    def _stride_range(cls, value: Any) -> Any:
        if value is not None and not 1 <= value[0] <= value[1]:
            raise ValueError(f"need 1 <= lo <= hi, got {list(value)}")
        return value

    train_subjects: list[str] | None = Field(
        None, description="subject-exclusive folds: only these subjects train; the split column is ignored")
    val_subjects: list[str] | None = None
    test_subjects: list[str] | None = None
    clip_start: Literal["planned", "gaussian"] = Field(
        "planned", description="training clips: planned positions, or a start ~ N(L/4, (L/6)²) on [0, L/2] "
        "redrawn every epoch with frames `step` apart (Stergiou 2021 §5.4.1)")
    step: int = Field(1, ge=1, description="frames between a clip's frames (dataset stride: HACS 2, Kinetics 5)")


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "cnn3d"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw", "adadelta", "rmsprop"] = "sgd"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-5, ge=0)
    schedule: Literal["constant", "cosine", "step"] = Field(
        "constant", description="cosine: lr * 1/2 (1 + cos(pi n / n_max)) per step over max_epochs (Stergiou 2021); "
        "step: lr * gamma^k after the k-th milestone epoch or every step_every epochs (Stergiou 2021 §4.4.1)"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps before the cosine (Stergiou 2021: 8k)")
    milestones: list[int] = Field(default_factory=list, description="step schedule: epochs (e.g. [40, 70, 120])")
    step_every: int | None = Field(None, ge=1, description="step schedule: reduce every this many epochs")
    gamma: float = Field(0.1, gt=0, description="step schedule: factor per reduction")

    @model_validator(mode="after")
    def _step_needs_epochs(self) -> OptimConfig:
        if self.schedule == "step" and not self.milestones and self.step_every is None:
            raise ValueError("optim.schedule=step needs optim.milestones or optim.step_every")
        return self


class TrainConfig(_Strict):
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1, description="early stopping: epochs without improvement")
    monitor: Literal["val_acc", "val_loss", "val_f1"] = "val_acc"
    seed: int = 0
    devices: int = Field(1, ge=1, description="devices (processes) per node")
    num_nodes: int = Field(1, ge=1, description="machines for multi-node DDP (launch with srun/torchrun)")
    strategy: str = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="auto picks a GPU when one is present, else the CPU")
    precision: Literal["32", "32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true"] = "32-true"
    logger: list[Literal["csv", "tensorboard", "wandb", "mlflow"]] = Field(
        [], description="Lightning loggers besides metrics.csv (live curves): csv, tensorboard, wandb, mlflow")
    gradient_clip: float | None = None
    limit_train_batches: float = Field(1.0, gt=0)
    progress: bool = True
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per process (None = torch's default). Small models on "
        "a busy CPU often run several times faster with 1")
    loss: Literal["ce", "bce"] = Field("ce", description="CE, or BCE on one-hot targets (Broomé 2022)")
    init_from: str | None = Field(
        None, description="start from these weights: a run dir, a .safetensors file, or published weights "
        "by name (torchvision:r2plus1d_18, pytorchvideo:x3d_s; `kinetoscope models pull --list`); a head "
        "of another size is re-initialised")
    trainable: list[str] | None = Field(
        None, description="train only parameters whose names start with one of these prefixes (e.g. head)")
    freeze: list[str] | None = Field(
        None, description="freeze the parameters and BatchNorm statistics of these top-level modules "
        "(e.g. [stem, layer1]); the rest trains")
    multigrid: Literal["none", "long", "short", "long+short"] = Field(
        "none", description="multigrid batch schedule, b·t·h·w = B·T·H·W (Wu et al. 2020; Stergiou 2021 §4.4.1)")


class RunConfig(_Strict):
    name: str = "run"
    out_dir: Path = Path("runs")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunConfig:
        """The typed config a run directory was trained with (its ``config.yaml``)."""
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {run_dir} is not a kinetoscope run directory")
        return build_config(load_yaml(path), source=str(path))


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        given = "" if e["type"] in ("missing",) else f" (got {e.get('input')!r})"
        lines.append(f"  {key}: {msg}{given if e['type'] != 'extra_forbidden' else ''}")
    return f"invalid config {source}:\n" + "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.hidden=16"`` -> (["model", "hidden"], 16); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    quoted = raw.strip()[:1] in ("'", '"')  # a quoted value stays a string: name='007'
    if isinstance(value, str) and not quoted:  # YAML 1.1 reads "1e-3" as a string; numbers are what people mean
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def build_config(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "") -> RunConfig:
    raw = apply_overrides(dict(raw), list(overrides or []))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source or "<dict>")) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load and validate a run config; ``overrides`` are ``key.sub=value`` strings."""
    raw = load_yaml(path) if path is not None else {}
    return build_config(raw, overrides, source=str(path) if path else "<command line>")
