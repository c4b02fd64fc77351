"""The ``driftsim-compare`` command: fit the model's drift rate to a recording (driftsim.analysis.fit).

    driftsim-compare rec.nwb                       γ and noise ceiling for relu, depth 1 (--depth, --activation ...)
    driftsim-compare rec.nwb run.h5                ... with the architecture and stimuli of a run
    driftsim-compare rec.nwb multirun/ --out fit/  rank a sweep's configurations, fit the best

RECORDING is an NWB file, a folder of NWB files holding one subject's sessions, or a netCDF file in the
labelled layout (driftsim.io.load_recording). Writes ``fit.json`` (gamma, gamma_ci, time_unit, residual,
ceiling, ...; for a sweep also the ranking, and ``ranking.csv``) and ``fit.png`` (data and model curves).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
from .analysis.fit import CEILINGS, Architecture, architecture_of, fit_drift_rate, rank
from .analysis.plots import fit_curves, save_figures
from .io import store
from .io.recordings import TIME_UNITS, load_recording

__all__ = ["main"]

_SHOWN = 5  # model curves drawn for a sweep: the best ones


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftsim-compare", description="Fit driftsim's drift rate γ (and a noise "
                                "ceiling) to a recording's population-vector correlation over elapsed time, "
                                "with bootstrap intervals over cells; rank a sweep's configurations.")
    p.add_argument("recording", type=Path, help="NWB file, folder of NWB files (one subject), or netCDF file")
    p.add_argument("run", type=Path, nargs="?", default=None,
                   help="a driftsim run file (its architecture and stimuli) or a sweep folder (rank its runs)")
    p.add_argument("--out", type=Path, default=None, help="folder for fit.json and fit.png (default: the "
                   "recording's folder)")
    model = p.add_argument_group("model, without a run")
    model.add_argument("--depth", type=int, default=None, help="hidden layers (default 1)")
    model.add_argument("--activation", default=None, help="φ: relu, erf, linear, ... (default relu)")
    model.add_argument("--sigma", type=float, default=None, help="prior std σ (default 1)")
    model.add_argument("--layer", type=int, default=None, help="observed hidden layer (default the last)")
    fit = p.add_argument_group("fit")
    fit.add_argument("--ceiling", choices=CEILINGS, default="split", help="noise ceiling c: from the trials' split "
                     "halves (default), fitted with γ, or none (c = 1)")
    fit.add_argument("--all-cells", action="store_true", help="keep every cell, not only those active (mean > 0) "
                     "in both sessions of a pair (for responses that may be negative)")
    fit.add_argument("--boot", type=int, default=500, help="bootstrap resamples of the cells (default 500)")
    fit.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    fit.add_argument("--time-unit", choices=sorted(TIME_UNITS), default=None,
                     help="unit of the session times for γ (default: as stored; NWB: seconds)")
    fit.add_argument("--series", default=None, help="NWB: the response series, when the file holds several")
    return p


def _summary(fit, label: str) -> str:
    ci = "" if fit.gamma_ci is None else f" ({fit.level:.0%} CI {fit.gamma_ci[0]:.4g} – {fit.gamma_ci[1]:.4g})"
    line = f"{label}: γ = {fit.gamma:.4g} per {fit.time_unit}{ci}"
    if fit.ceiling_method != "none":
        cci = "" if fit.ceiling_ci is None else f" ({fit.ceiling_ci[0]:.3g} – {fit.ceiling_ci[1]:.3g})"
        line += f"; noise ceiling c = {fit.ceiling:.3g}{cci} ({fit.ceiling_method})"
    line += f"; rms residual {fit.residual:.3g} over {len(fit.elapsed)} lags"
    return line + ("  [γ at the edge of the searched range]" if fit.at_bound else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``driftsim-compare RECORDING [RUN_OR_SWEEP] [--out DIR]``; exit 2 on bad input."""
    args = _parser().parse_args(argv)
    flags = {k: getattr(args, k) for k in ("depth", "activation", "sigma", "layer") if getattr(args, k) is not None}
    try:
        if args.run is not None and flags:
            raise ValueError(f"give either a run or sweep, or the model's --{', --'.join(flags)}, not both")
        source = sorted(args.recording.glob("*.nwb")) if args.recording.is_dir() else args.recording
        recording = load_recording(source, series=args.series, time_unit=args.time_unit)
        opts = {"ceiling": args.ceiling, "level": args.level, "seed": args.seed, "active_only": not args.all_cells}
        extra = {"recording": str(args.recording)}
        if args.run is not None and args.run.is_dir():
            table = rank(recording, args.run, **opts)
            best = fit_drift_rate(recording, architecture_of(store.read_run(table.file[0])), n_boot=args.boot, **opts)
            keys = [c for c in table.columns if c not in ("file", "residual", "gamma", "gamma_ci", "ceiling",
                                                           "gamma_model", "time_scale", "fit")]
            labels = [", ".join(f"{k}={row[k]}" for k in keys) or Path(row.file).parent.name
                      for _, row in table.iterrows()]
            fits = {labels[0]: best, **{lab: f for lab, f in zip(labels[1:_SHOWN], table.fit[1:_SHOWN])}}
            extra.update(run=table.file[0], ranking=json.loads(table.drop(columns="fit").to_json(orient="records")))
        else:
            arch = Architecture(**flags) if args.run is None else architecture_of(store.read_run(args.run))
            fits = {"model" if args.run is None else args.run.name: fit_drift_rate(recording, arch,
                                                                                  n_boot=args.boot, **opts)}
            table = None
            extra["run"] = None if args.run is None else str(args.run)
    except (FileNotFoundError, ImportError, ValueError) as e:  # StoreError is a ValueError
        print(f"driftsim-compare: error: {e}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else (args.recording if args.recording.is_dir()
                                                 else args.recording.parent)
    out.mkdir(parents=True, exist_ok=True)
    label, best = next(iter(fits.items()))
    print(_summary(best, label))
    if table is not None:
        print(table.drop(columns=["fit", "gamma_ci"]).to_string(index=False))
        table.drop(columns="fit").to_csv(out / "ranking.csv", index=False)
        print(out / "ranking.csv")
    (out / "fit.json").write_text(json.dumps({**asdict(best), **extra}, indent=2, default=str) + "\n")
    print(out / "fit.json")
    for path in save_figures({"fit": fit_curves(fits)}, out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
