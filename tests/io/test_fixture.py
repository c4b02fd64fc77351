"""Schema compatibility (DESIGN.md "HDF5 layout"): the committed run file tests/fixtures/debug_both_v0.1.0.h5,
written by driftsim 0.1.0 (tests/fixtures/README.md), reads with today's ``read_run``, and today's code
recomputes its stored config to the same numbers."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf

from driftsim import app
from driftsim.analysis.sweeps import flat_config
from driftsim.io import store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "debug_both_v0.1.0.h5"

# DESIGN.md "HDF5 layout" of a mode=both run with a drift phase, written out independently of store.required_paths
DESIGN = ["/task/x_train", "/task/y_train", "/task/x_test", "/task/y_test",
          *[f"/theory/learn/{k}" for k in ("t", "f_train", "f_test", "f_ntk_test")],
          "/theory/nngp/f_train", "/theory/nngp/f_test", "/theory/kernels/nngp", "/theory/kernels/ntk",
          *[f"/theory/drift/{k}" for k in ("t", "f_train", "f_test", "f_inf_train", "f_inf_test")],
          *[f"/sim/{p}/{k}" for p in ("learn", "drift") for k in ("t", "f_train", "f_test")],
          *[f"/{g}/{s}/{p}/{k}" for s in ("theory", "sim") for p in ("learn", "drift")
            for g, k in (("decode", "accuracy"), ("hist", "counts"), ("hist", "edges"))]]

# The simulation runs in float32 (sim.dtype): the same seeded steps on the CPU agree to rounding, ~1e-7 of the
# predictors' O(1) scale; 1e-5 still fails on any change of a scheme, a seed or a recorded time. What is computed from
# the simulation (its histogram edges, decoders) takes the same. The theory is float64, but relu's arccos kernel
# amplifies a rounding of 1e-16 in a cosine near 1 to √1e-16 = 1e-8 in the angle: the NTK differs by 3.4e-9 between
# the CPU that wrote the file and an AMD EPYC. Its tolerance, 1e-7 of its scale, still fails on any change of the
# method (theory.tol is 1e-4).
RTOL_SIM, RTOL_THEORY = 1e-5, 1e-7


def datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__("/" + name, obj[()]) if isinstance(obj, h5py.Dataset)
                      else None)
    return out


def check_counts(key: str, old: np.ndarray, new: np.ndarray, run: dict, rtol: float) -> None:
    """Histogram counts [n, 2, B] agree but for predictor values within rtol of an interior bin edge: e.g. the
    theory's f = 0 at t = 0 on the middle edge of a symmetric range, whose sign is a rounding's."""
    _, _, source, phase, _ = key.split("/")
    f, edges, y = run[f"/{source}/{phase}/f_train"], run[f"/hist/{source}/{phase}/edges"], run["/task/y_train"]
    f = f.reshape(f.shape[0], -1, f.shape[-1])  # [n, E or 1, P]
    tol = rtol * max(float(np.abs(edges).max()), 1.0)
    near = (np.abs(f[..., None] - edges[1:-1]) <= tol).any(-1)  # [n, E or 1, P]
    for c, label in enumerate((1, -1)):
        moved = np.abs(new[:, c].astype(np.int64) - old[:, c]).sum(-1)  # a value that moves changes two bins
        allowed = 2 * near[:, :, y == label].sum((1, 2))
        assert (moved <= allowed).all(), f"{key}: class {label} counts differ beyond values on a bin edge"


def test_fixture_reads_with_the_layout_of_schema_driftsim_1():
    run = store.read_run(FIXTURE, activity=True)
    assert run.attrs["/"]["schema"] == "driftsim/1" and run.attrs["/"]["driftsim_version"] == "0.1.0"
    assert run.sources == ("theory", "sim") and run.phases == ("learn", "drift")
    assert not [p for p in DESIGN if p not in run]
    P, Q, n, E = 4, 1, 8 + 1, 8  # experiment=debug: synthetic P = 4, one test point, 8 times plus t = 0, 8 networks
    assert run["/task/x_train"].shape == (P, P + 1) and run["/theory/kernels/ntk"].shape == (P + Q, P + Q)
    assert run["/theory/learn/f_train"].shape == (n, P) and run["/sim/drift/f_test"].shape == (n, E, Q)
    assert run["/sim/activity/drift/train"].shape == (n, E, P, 8) and run["/hist/sim/drift/counts"].shape == (n, 2, 10)
    assert run.attrs["/theory/drift"]["t0"] == run.config["protocol"]["t0"] == 125.0


def test_todays_code_recomputes_the_fixture(tmp_path, compose_config):
    stored = store.read_run(FIXTURE).config
    # the stored (resolved) config over today's schema, which refuses a key it no longer has or a wrong type;
    # keys added since keep their defaults
    cfg = OmegaConf.merge(compose_config(f"task={stored['task']['name']}"), stored)
    today = flat_config(OmegaConf.to_container(cfg, resolve=True))
    assert {k: today[k] for k in flat_config(stored)} == flat_config(stored)
    # written on a CPU; device and out say where a run is computed and written, not what it computes
    cfg.device, cfg.out = "cpu", str(tmp_path / "again.h5")
    path, computed = app.run_config(cfg)
    assert computed
    old, new = datasets(FIXTURE), datasets(path)
    assert set(old) <= set(new)
    worst = {}
    for key, a in old.items():
        b = new[key]
        assert b.shape == a.shape and b.dtype == a.dtype, key
        rtol = RTOL_SIM if key.startswith(("/sim/", "/hist/sim/", "/decode/sim/")) else RTOL_THEORY
        if key.startswith("/hist/") and key.endswith("/counts"):
            check_counts(key, a, b, new, rtol)
            continue
        scale = max(float(np.abs(a).max()), 1.0)
        worst[key] = float(np.abs(b.astype(np.float64) - a).max()) / scale
        assert worst[key] <= rtol, f"{key}: max difference {worst[key]:.2e} of scale {scale:g} exceeds {rtol:g}"
    print("max relative difference:", max(worst.values()), "at", max(worst, key=worst.get))
