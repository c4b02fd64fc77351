"""The ``driftsim-export`` command: a run's observed populations as NWB or netCDF files (driftsim.io.export).

    driftsim-export run.h5 --to nwb --out shared/      one NWB file (+ sidecar YAML) per observed network
    driftsim-export run.h5 --to netcdf --out shared/   one netCDF file per observed network
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .io.export import FORMATS, export_run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``driftsim-export RUN --to nwb|netcdf --out DIR``; prints the files written, exit 2 on
    a bad file or a missing extra."""
    parser = argparse.ArgumentParser(prog="driftsim-export", description="Write the observed populations of a "
                                     "driftsim run (/observe) as NWB or netCDF recordings, one file per network.")
    parser.add_argument("run", type=Path, help="a driftsim run file with observed populations (observe.sessions > 0)")
    parser.add_argument("--to", choices=sorted(FORMATS), default="nwb", help="file format (default nwb; needs "
                        "the extra driftsim[nwb])")
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default: the run's folder)")
    parser.add_argument("--source", choices=["theory", "sim"], action="append", default=None,
                        help="only this source's recordings (repeatable; default: every source observed)")
    args = parser.parse_args(argv)
    try:
        files = export_run(args.run, args.out if args.out is not None else args.run.parent, args.to, args.source)
    except (FileNotFoundError, ImportError, ValueError) as e:  # StoreError is a ValueError
        print(f"driftsim-export: error: {e}", file=sys.stderr)
        return 2
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
