"""Small shared helpers: atomic writes, seeding, progress bars. Imports nothing heavy."""

from __future__ import annotations

import contextlib
import errno
import hashlib
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
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    An interrupted write leaves the old file (or none), never half of a new one. ``durable=True`` also
    fsyncs the file before the rename and the folder after it, so the new file survives a power cut
    too (weights and checkpoints; small files skip it, see ``atomic_write_bytes``). An ``OSError`` of
    the write (disk full, read-only file system, name too long) names ``path``, not the temporary.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if durable:
            fsync_path(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
        if durable:
            fsync_path(path.parent)
    except OSError as exc:
        name_os_error(exc, path, "write", temporary=str(path.parent / f".{path.name}."))
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def name_os_error(exc: OSError, path: str | Path, operation: str, temporary: str | None = None) -> OSError:
    """Fill in the path and operation of an ``OSError`` that lacks them (``fh.write`` raises ENOSPC
    without a file name; ``mkstemp`` names the temporary (starting with ``temporary``), not the file
    being written)."""
    if exc.filename is None or (temporary is not None and str(exc.filename).startswith(temporary)):
        exc.filename = str(path)
        if getattr(exc, "operation", None) is None:
            exc.operation = operation  # type: ignore[attr-defined]
    return exc


# what a user can do about an OSError, by errno
_OS_ERROR_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space and run the command again (finished work is kept)",
    errno.EDQUOT: "disk quota exceeded; free some space and run the command again (finished work is kept)",
    errno.EROFS: "read-only file system; choose an output folder on a writable disk",
    errno.ENAMETOOLONG: "file name too long; use a shorter output folder or file name",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer workers",
    errno.ENFILE: "too many open files on this system; close other programs or use fewer workers",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EFBIG: "file too large for this file system",
    errno.EIO: "input/output error (a failing disk or a lost network share?)",
}
# the operation, from the innermost function (pathlib/os/shutil/tempfile names) that raised
_OPERATIONS = (("mkdir", "create directory"), ("makedirs", "create directory"), ("rmtree", "delete"),
               ("unlink", "delete"), ("remove", "delete"), ("replace", "rename"), ("rename", "rename"),
               ("mkstemp", "create"), ("copy", "copy"), ("write", "write"), ("save", "write"),
               ("open", "open"), ("read", "read"), ("load", "read"), ("stat", "access"), ("exists", "access"),
               ("iterdir", "list"), ("scandir", "list"), ("listdir", "list"), ("glob", "list"))
_DEFAULT_OPERATION = {errno.ENOSPC: "write", errno.EDQUOT: "write", errno.EFBIG: "write", errno.EROFS: "write",
                      errno.EMFILE: "open", errno.ENFILE: "open"}


def describe_os_error(exc: OSError) -> str:
    """One line naming the operation, the path and what to do: ``cannot write runs/x/model.safetensors:
    no space left on the device; free some space ...``."""
    operation = getattr(exc, "operation", None)
    if operation is None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        function = tb.tb_frame.f_code.co_name.lower() if tb is not None else ""
        operation = next((op for key, op in _OPERATIONS if key in function), None)
        operation = operation or _DEFAULT_OPERATION.get(exc.errno or 0, "access")
    target = str(exc.filename) if exc.filename is not None else "a file (the system did not say which)"
    if exc.filename2 is not None:
        target += f" -> {exc.filename2}"
    reason = _OS_ERROR_HINTS.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", []))
    return f"cannot {operation} {target}: {reason}{notes}"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, hashed from a memory map (no copy; hashlib releases the GIL meanwhile)."""
    import mmap

    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return hashlib.sha256(view).hexdigest()


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
        # through .write(): a full disk is then OSError(ENOSPC); ndarray.tofile, which np.save uses on a
        # real file, raises an OSError without an errno
        np.save(_Writer(fh), np.ascontiguousarray(array), allow_pickle=False)


class _Writer:
    """A file seen only through its ``write`` method."""

    def __init__(self, fh: Any) -> None:
        self.write = fh.write


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
