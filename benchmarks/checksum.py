"""What verified weights and atomic checkpoints cost, for a 33M-parameter model (r3d_18, 400 classes).

Load (``load_run_model``: build the model, read ``model.safetensors``, load the state dict):

* plain     -- the previous loader: ``safetensors.torch.load_file`` (memory-mapped), no checksum;
* verified  -- the current loader: sha256 of the file (memory-mapped) in a background thread while the
  model is built, compared with ``model.json`` before the weights are loaded;
* sha256    -- the hashing alone.

Wall-clock and CPU seconds (this process, all threads) are both shown: the hash runs beside the model
construction, so its wall-clock cost is near zero when a core is free, while its CPU cost stays.

Save of a Lightning checkpoint of the same model with Adam state (what ``ModelCheckpoint`` writes once
or twice per epoch):

* lightning -- ``TorchCheckpointIO``: serialise to memory, copy through a temporary file, no fsync;
* atomic    -- ``AtomicCheckpointIO``: serialise to memory, temporary file beside the target, fsync,
  rename, folder fsync.

Goal: the checksum costs < 5 % of a load (wall clock). Files are read warm (page cache), the usual case.

    .venv/bin/python benchmarks/checksum.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``fn()`` after one warm-up call."""
    fn()  # warm-up: page cache, allocator, lazy imports
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _plain_load(run_dir: Path) -> None:
    """The loader before checksums: build, ``load_file`` (mmap), ``load_state_dict``."""
    import json

    from safetensors.torch import load_file

    from kinetoscope.models import create_model

    spec = json.loads((run_dir / "model.json").read_text())
    model = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec.get("options", {}))
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")), strict=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from kinetoscope.models import create_model
    from kinetoscope.models.checkpoint import load_run_model, save_run_model
    from kinetoscope.train.checkpoint_io import AtomicCheckpointIO
    from kinetoscope.utils import sha256_file

    torch.manual_seed(0)
    model = create_model("r3d_18", 400)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        run = Path(tmp) / "run"
        save_run_model(model, run, {"name": "r3d_18", "num_classes": 400, "in_channels": 3, "options": {},
                                    "classes": [str(i) for i in range(400)]})
        size = (run / "model.safetensors").stat().st_size
        plain = _median_seconds(lambda: _plain_load(run), args.repeats)
        verified = _median_seconds(lambda: load_run_model(run), args.repeats)
        sha = _median_seconds(lambda: sha256_file(run / "model.safetensors"), args.repeats)

        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randn(1, 3, 8, 32, 32)).sum().backward()
        optimizer.step()  # Adam state: two more tensors per parameter
        checkpoint = {"epoch": 0, "global_step": 1, "state_dict": model.state_dict(),
                      "optimizer_states": [optimizer.state_dict()]}
        ckpt = Path(tmp) / "checkpoints" / "last.ckpt"
        lightning = _median_seconds(lambda: TorchCheckpointIO().save_checkpoint(checkpoint, ckpt), args.repeats)[0]
        atomic = _median_seconds(lambda: AtomicCheckpointIO().save_checkpoint(checkpoint, ckpt), args.repeats)[0]
        ckpt_size = ckpt.stat().st_size

    print(f"r3d_18: {params / 1e6:.1f}M parameters, model.safetensors {size / 2**20:.0f} MiB, "
          f"checkpoint {ckpt_size / 2**20:.0f} MiB; median of {args.repeats}")
    print(f"{'load_run_model':<34}{'wall s':>8}{'cpu s':>8}")
    for name, (wall, cpu) in (("  plain (no checksum)", plain), ("  verified (sha256 in a thread)", verified),
                              ("  sha256 alone", sha)):
        print(f"{name:<34}{wall:>8.3f}{cpu:>8.3f}")
    wall_cost, cpu_cost = 100 * (verified[0] / plain[0] - 1), 100 * (verified[1] / plain[1] - 1)
    print(f"checksum cost: wall +{wall_cost:.1f} %, cpu +{cpu_cost:.1f} % of a plain load; sha256 "
          f"{size / sha[1] / 2**30:.2f} GiB/s of CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'checkpoint save':<34}{'seconds':>10}")
    print(f"{'  lightning (tmp copy, no fsync)':<34}{lightning:>10.3f}")
    print(f"{'  atomic (beside, fsync, rename)':<34}{atomic:>10.3f}   x{atomic / lightning:.3f} of lightning")


if __name__ == "__main__":
    main()
