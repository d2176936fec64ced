"""The fused ConvLSTM cell kernel (``convlstm_cell.c``): compiled once per machine, loaded with ctypes.

PyTorch has no fused LSTM-cell kernel on CPU (``_thnn_fused_lstm_cell`` is CUDA-only), and the
cell's ~7 forward and ~10 backward pointwise operations are memory passes that cost as much as the
recurrent convolution at these widths. The kernel does each direction in one pass.

On first use the source is compiled with the machine's C compiler (``$CC``, else ``cc``) into the
cache directory (``$KINETOSCOPE_CACHE``, else ``$XDG_CACHE_HOME/kinetoscope``, else
``~/.cache/kinetoscope``; a per-user temporary directory if that is not writable) under a name
hashing the source, the flags, the compiler and the CPU, so a cache shared between different machines
never loads a library built for another CPU. The build writes to a temporary name and renames it, so
concurrent processes (DDP ranks) are safe.

Without a working compiler, or with ``KINETOSCOPE_NATIVE=0``, :func:`cell_kernel` returns ``None``
and the layer uses its pure-PyTorch path (same numbers to rounding level; slower). The reason is
logged once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("convlstm_cell.c")
# Not -ffast-math: gcc links crtfastmath.o into a -ffast-math shared library, whose constructor turns
# on flush-to-zero for the loading thread, silently changing every later float result in the process.
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_CPU_KEYS = ("model name", "flags", "Features", "CPU implementer", "CPU architecture", "CPU variant", "CPU part")


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    from kinetoscope.utils import cache_root

    return cache_root() / "native"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: x86 model and flags, ARM implementer/part/features."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            lines = {line for line in handle if line.split(":")[0].strip() in _CPU_KEYS}
    except OSError:
        lines = set()
    return platform.machine() + "\n" + "".join(sorted(lines))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _private_dir(path: Path) -> Path:
    """``path`` created if needed, refused unless this user owns it and nobody else may write to it
    (a shared temporary directory must not let another user plant the library we load)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"{path} is not owned by this user or is writable by others")
    if not os.access(path, os.W_OK):
        raise PermissionError(f"{path} is not writable")
    return path


def _verified(target: Path) -> bool:
    """The cached library exists, is ours, and matches the digest recorded when it was built (a
    truncated library can crash ``dlopen`` with SIGBUS instead of raising)."""
    stamp = target.with_suffix(".sha256")
    try:
        if target.stat().st_uid != os.getuid():
            return False
        return stamp.read_text().strip() == _digest(target)
    except OSError:
        return False


def _build(compiler: str) -> Path:
    """The compiled kernel for this source, flags, compiler and CPU: from the cache if it verifies,
    else built (into a temporary name, then renamed with its digest beside it)."""
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    name = f"convlstm_cell-{key}.so"
    try:
        directory = _private_dir(cache_dir())
    except OSError as error:  # read-only home (some CI runners): build per user in the temp directory
        directory = Path(tempfile.gettempdir()) / f"kinetoscope-native-{os.getuid()}"
        log.info("kernel cache %s unusable (%s); using %s", cache_dir(), error, directory)
        directory = _private_dir(directory)
    target = directory / name
    if _verified(target):
        return target
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        built = Path(scratch) / name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {SOURCE.name}:\n{result.stderr.strip()}")
        stamp = Path(scratch) / "digest"
        stamp.write_text(_digest(built))
        os.replace(stamp, target.with_suffix(".sha256"))
        os.replace(built, target)
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("KINETOSCOPE_NATIVE", "1") == "0":
        log.info("fused ConvLSTM kernel disabled by KINETOSCOPE_NATIVE=0; using the PyTorch path")
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        log.warning("no C compiler found (set CC): ConvLSTM uses its slower pure-PyTorch path")
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for suffix in _DTYPES.values():
            forward = getattr(library, f"cell_forward_{suffix}")
            forward.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr, i64, i64, ctypes.c_int]
            forward.restype = None
            backward = getattr(library, f"cell_backward_{suffix}")
            backward.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, i64, i64, i64, ptr, i64, i64, i64, ptr, ptr,
                                 ptr, ctypes.c_int]
            backward.restype = None
    except (OSError, AttributeError, RuntimeError, subprocess.SubprocessError) as error:
        log.warning("fused ConvLSTM kernel unavailable (%s): using the slower pure-PyTorch path", error)
        return None
    return library


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _bcp_strides(tensor: torch.Tensor) -> tuple[int, int, int] | None:
    """(batch, channel, pixel) strides of ``[B, C, H, W]``, or ``None`` if H and W do not collapse
    into one pixel index (e.g. a gradient with H and W swapped)."""
    sb, sc, sh, sw = tensor.stride()
    if tensor.shape[2] > 1 and tensor.shape[3] > 1 and sh != sw * tensor.shape[3]:
        return None
    return sb, sc, sw if tensor.shape[3] > 1 else sh


def _strides_of(tensor: torch.Tensor) -> tuple[int, int, int]:
    strides = _bcp_strides(tensor)
    if strides is None:
        raise ValueError(f"cell kernel: H and W of a tensor with strides {tensor.stride()} do not collapse")
    return strides


class CellKernel:
    """The compiled forward/backward of one dtype. Gates, cell states and gradients of gates are
    channels-last ``[B, 4h | h, H, W]`` tensors (NHWC in memory)."""

    def __init__(self, library: ctypes.CDLL, suffix: str):
        self._forward = getattr(library, f"cell_forward_{suffix}")
        self._backward = getattr(library, f"cell_backward_{suffix}")

    def forward(self, gates, c_prev, c, tanh_c, h_out, h_next) -> None:
        """Activates ``gates`` in place; writes S_t to ``c``, tanh(S_t) to ``tanh_c``, H_t to ``h_out``
        (any collapsible layout) and, if given, to ``h_next`` (a channels-last slice)."""
        batch, hidden, height, width = c.shape
        ho = _strides_of(h_out)
        hn = _strides_of(h_next) if h_next is not None else (0, 1, 0)
        if hn[1] != 1:
            raise ValueError(f"cell kernel: h_next must be a channels-last slice, got strides {h_next.stride()}")
        self._forward(batch, height * width, hidden, gates.data_ptr(), _pointer(c_prev), c.data_ptr(),
                      tanh_c.data_ptr(), h_out.data_ptr(), ho[0], ho[1], ho[2], _pointer(h_next), hn[0], hn[2],
                      torch.get_num_threads())

    def backward(self, act, tanh_c, c_prev, dh_out, dh_rec, dc_in, dc_out, grad_gates) -> None:
        """dL/d(pre-activation gates) into ``grad_gates`` and dL/dS_{t-1} into ``dc_out`` (may be
        ``dc_in``; ``None`` at step 0); ``dh_rec`` (dL/dH_t through the recurrence) may be ``None``."""
        batch, hidden, height, width = tanh_c.shape
        do = _bcp_strides(dh_out)
        if do is None:  # the output gradient may come in any layout
            dh_out = dh_out.contiguous()
            do = _strides_of(dh_out)
        dr = _strides_of(dh_rec) if dh_rec is not None else (0, 0, 0)
        self._backward(batch, height * width, hidden, act.data_ptr(), tanh_c.data_ptr(), _pointer(c_prev),
                       dh_out.data_ptr(), do[0], do[1], do[2], _pointer(dh_rec), dr[0], dr[1], dr[2],
                       _pointer(dc_in), _pointer(dc_out), grad_gates.data_ptr(), torch.get_num_threads())


def cell_kernel(dtype: torch.dtype, device: torch.device) -> CellKernel | None:
    """The fused cell for ``dtype`` on CPU, or ``None`` (other dtype or device, or no compiler)."""
    if device.type != "cpu" or dtype not in _DTYPES:
        return None
    library = _library()
    return None if library is None else _kernel(library, _DTYPES[dtype])


@functools.cache
def _kernel(library: ctypes.CDLL, suffix: str) -> CellKernel:
    return CellKernel(library, suffix)
