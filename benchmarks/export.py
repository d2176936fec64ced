"""Export every registered model in every format: does it round-trip, how close, how long.

For each model (built for 5 classes, input ``3 x 8 x 64 x 64``; two-stream models also get flow)
and each format of ``kinetoscope export`` (torchscript, exported-program, onnx), the model is
exported, reloaded from disk and run on the same random clip; the table gives the largest
|exported - eager| logit difference and the export time, or the exporter's reason for failing.
``docs/export.md`` is this table.

    .venv/bin/python benchmarks/export.py [--models cnn3d,convlstm] [--input 3x8x64x64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from kinetoscope.models import list_models
from kinetoscope.models.export import FORMATS, ExportError, export_and_check
from kinetoscope.models.profile import build_for_input, example_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--input", default="3x8x64x64")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.input.split("x"))
    names = args.models.split(",") if args.models else list_models()
    formats = args.formats.split(",")
    print(f"| model | {' | '.join(formats)} |")
    print(f"|---|{'---|' * len(formats)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            torch.manual_seed(0)
            try:
                model = build_for_input(name, shape, 5, {}, "cpu").eval()
                clip = list(example_inputs(model, shape))
                with torch.no_grad():
                    model(*clip)
            except Exception as error:  # a model that cannot take this input at all
                print(f"| {name} | " + " | ".join(["(does not run at this input: "
                                                    f"{type(error).__name__})"] * len(formats)) + " |", flush=True)
                continue
            cells = []
            for fmt in formats:
                start = time.perf_counter()
                try:
                    result = export_and_check(model, clip, Path(tmp) / f"{name}.{fmt}", fmt)
                    cells.append(f"{result['max_abs_diff']:.1e} ({time.perf_counter() - start:.0f} s)")
                except ExportError as error:
                    reason = str(error).split(": ", 1)[-1].replace("|", "/")[:160]
                    cells.append(f"no: {reason}")
            print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
