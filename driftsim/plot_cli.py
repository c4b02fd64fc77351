"""The ``driftsim-plot`` command: the standard figures of one run file as PNG (driftsim.analysis.plots).

    driftsim-plot run.h5                 PNGs next to the file: run_trajectories.png, run_error.png, ...
    driftsim-plot run.h5 --out figures/  ... into figures/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened
from .io import output, store  # noqa: E402
from .analysis.plots import save_figures, standard_figures  # noqa: E402

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``driftsim-plot FILE [--out DIR]``; prints the paths written, exit 2 (one line) on a
    bad file or an ``--out`` that is a file or cannot be written."""
    parser = argparse.ArgumentParser(prog="driftsim-plot", description="Write the standard figures of one "
                                     "driftsim run file (HDF5, schema driftsim/1) as PNG.")
    parser.add_argument("file", type=Path, help="a driftsim run file (driftsim.h5)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: the file's folder)")
    args = parser.parse_args(argv)
    try:
        run = store.read_run(args.file)
        out = output.folder(args.out if args.out is not None else args.file.parent)
        with output.os_errors(out):
            paths = save_figures(standard_figures(run), out, prefix=f"{args.file.stem}_")
    except (FileNotFoundError, store.StoreError, output.OutputError) as e:
        print(f"driftsim-plot: error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
