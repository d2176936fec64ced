"""Small shared helpers: atomic writes, seeding, progress bars. Imports nothing heavy."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    An interrupted write leaves the old file (or none), never half of a new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via temp file + rename. This survives an interrupted or killed process (the case that
    matters for resumable jobs); it does not fsync, which made many small writes ~10x slower."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save_npy(path: str | Path, array: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A CSV document (header + rows) as text, for ``atomic_write_text``."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def is_interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("KINETOSCOPE_PLAIN") is None


def progress(
    iterable: Iterable[T], total: int | None = None, description: str = "", every: float = 10.0
) -> Iterator[T]:
    """A Rich progress bar on a terminal; otherwise a plain line at most every ``every`` seconds (and a
    last one if any was printed), so short work stays silent in logs."""
    import time

    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if is_interactive():
        from rich.progress import track

        yield from track(iterable, total=total, description=description, transient=True)
        return
    last = time.monotonic()
    printed = False
    i = 0
    for i, item in enumerate(iterable, 1):
        yield item
        if time.monotonic() - last >= every:
            print(f"{description} {i}/{total if total else '?'}", file=sys.stderr, flush=True)
            last, printed = time.monotonic(), True
    if printed:
        print(f"{description} {i}/{total if total else '?'} done", file=sys.stderr, flush=True)


def verbose() -> bool:
    """``kinetoscope -v`` (or ``KINETOSCOPE_VERBOSE=1``): show library banners, tips and warnings."""
    return os.environ.get("KINETOSCOPE_VERBOSE", "") not in ("", "0")


def quiet_libraries() -> None:
    """Silence what libraries print by default and users cannot act on: Lightning's tips and hardware
    banners, and deprecation warnings raised inside torch/Lightning. ``-v`` keeps them."""
    import logging
    import warnings

    if verbose():
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(torch|lightning|pytorch_lightning|torchmetrics)")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")  # we log per epoch
    warnings.filterwarnings("ignore", message=r".*torch.backends.cudnn.*deterministic.*")


def log(message: str, tag: str = "kinetoscope") -> None:
    """One status line on stderr (``tag`` in colour on a terminal)."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]{tag}[/] {message}", highlight=False, markup=True)


def cache_root() -> Path:
    """kinetoscope's per-user cache directory: ``$KINETOSCOPE_CACHE``, else ``$XDG_CACHE_HOME/kinetoscope``,
    else ``~/.cache/kinetoscope`` (compiled kernels, imported flow weights)."""
    if os.environ.get("KINETOSCOPE_CACHE"):
        return Path(os.environ["KINETOSCOPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kinetoscope"
