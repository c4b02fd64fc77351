"""Kernel matrices against neural-tangents (issue "Scale"): driftsim's NNGP and NTK (SPEC §3.3) and
neural-tangents' `stax` kernel_fn, side by side, on MNIST 0/1 from the standard files, depth 3 relu,
float64, over the (P + 20) × P pairs (training and test points against the training points).

    python benchmarks/bench_nt.py [--root ../shared/data/mnist] [--P 100 200 500 1000 2000]
                                  [--repeats 3] [--nt-python /work/ntvenv/bin/python]

neural-tangents is never a dependency of driftsim: it lives in its own venv (benchmarks/README.md has the
recipe), and this script re-invokes itself with that venv's python, passing the inputs and the kernels
through .npz files in a temporary folder. Each side runs twice: with its library's default threads and
with one thread (torch.set_num_threads(1); XLA without its Eigen thread pool), since on a shared machine
torch's threads wait on each other whenever a neighbour holds a core. Every time is the least of
``--repeats`` after one warm-up call (neural-tangents' first call, jit compilation included, is reported).
"driftsim both" is ``KernelModel.nngp_ntk``, both kernels from one layer recursion (σ0 = σ here), as
neural-tangents' ``kernel_fn(..., ("nngp", "ntk"))``.

Parametrisation (SPEC §3.3): `stax.Dense(W_std=w, parameterization="ntk")`, no bias, before every relu and
for the readout. Its NNGP with w = σ is driftsim's K_gp; its NTK with w = σ0 differentiates with respect
to ω where W = σ0 ω, so it is σ0² × driftsim's K_ntk. T enters neither. The agreement is checked at the
smallest P for the benchmark's prior and for one with σ ≠ σ0 ≠ 1, which would expose a wrong factor.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
NT_PYTHON = "/work/ntvenv/bin/python"
DEPTH, N_TEST = 3, 20
BENCH = (1.0, 1.0)                # (σ, σ0) of the prior, T = 1e-3
CHECK = (1.3, 0.6)                # a second prior for the agreement: every factor differs from 1
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


# --- neural-tangents side: runs in its own venv ----------------------------------------------------
def nt_main(inputs: str, output: str, repeats: int) -> None:
    """Time neural-tangents on every P in ``inputs`` and write its kernels at the smallest P to ``output``."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    def kernel_fn(w_std: float):
        layers = [stax.Dense(1, W_std=w_std, b_std=None, parameterization="ntk"), stax.Relu()] * DEPTH
        _, _, fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=None, parameterization="ntk"))
        return jax.jit(fn, static_argnames="get")

    data = np.load(inputs)
    sizes = sorted(int(k[1:]) for k in data.files if k.startswith("a"))
    fn = kernel_fn(BENCH[0])
    rows, kernels = [], {}
    for P in sizes:
        xa, xb = jax.device_put(data[f"a{P}"]), jax.device_put(data[f"b{P}"])
        start = time.perf_counter()
        jax.block_until_ready(fn(xa, xb, ("nngp", "ntk")))
        first = time.perf_counter() - start
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = jax.block_until_ready(fn(xa, xb, ("nngp", "ntk")))
            best = min(best, time.perf_counter() - start)
        rows.append({"P": P, "first_s": first, "compile_s": first - best, "both_s": best})
        if P == sizes[0]:
            assert out.nngp.dtype == np.float64, out.nngp.dtype
            for name, (sigma, sigma0) in (("bench", BENCH), ("check", CHECK)):
                kernels[f"{name}_nngp"] = np.asarray(kernel_fn(sigma)(xa, xb, "nngp"))
                kernels[f"{name}_ntk"] = np.asarray(kernel_fn(sigma0)(xa, xb, "ntk"))
    np.savez(output, **kernels)
    print(json.dumps({"rows": rows, "version": nt.__version__, "jax": jax.__version__,
                      "devices": [str(d) for d in jax.devices()]}))


# --- driftsim side: the project's venv -------------------------------------------------------------
def model(sigma: float, sigma0: float):
    from driftsim.prior import Prior
    from driftsim.theory.kernels import KernelModel
    return KernelModel("relu", DEPTH, Prior(T=1e-3, sigma=sigma, sigma0=sigma0))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_driftsim(xa, xb, repeats: int) -> dict:
    m = model(*BENCH)
    m.nngp_ntk(xa, xb)  # warm-up, as neural-tangents' first call
    return {"nngp_s": best_of(repeats, lambda: m.nngp(xa, xb)), "ntk_s": best_of(repeats, lambda: m.ntk(xa, xb)),
            "both_s": best_of(repeats, lambda: m.nngp_ntk(xa, xb))}


def rel_diff(ours, theirs: np.ndarray) -> tuple[float, float]:
    """max |ours − theirs| / |theirs| over all entries, and over the entries other than a training point
    with itself (xa's first rows are xb), where cos θ = 1 to rounding and arccos turns an ε into √(2ε)."""
    rel = np.abs(ours.numpy() - theirs) / np.abs(theirs)
    off = rel.copy()
    np.fill_diagonal(off, 0.0)
    return float(rel.max()), float(off.max())


def agreement(xa, xb, kernels) -> tuple[dict, dict]:
    """Relative differences of driftsim's kernels from neural-tangents' (NTK divided by σ0², SPEC §3.3), and
    each one's NTK on the self-pairs against its closed form there, (L+1) σ0^(2L) (|x|²/N0) / 2^L (θ = 0:
    K'_l = 1/2 and Q_{l+1} = σ0² Q_l / 2 in every layer)."""
    out, self_pairs = {}, {}
    sqnorm = ((xb * xb).sum(1) / xb.shape[1]).numpy()
    for name, (sigma, sigma0) in (("bench", BENCH), ("check", CHECK)):
        m = model(sigma, sigma0)
        ours, theirs = m.ntk(xa, xb), kernels[f"{name}_ntk"] / sigma0 ** 2
        out[f"{name} NNGP"] = rel_diff(m.nngp(xa, xb), kernels[f"{name}_nngp"])
        out[f"{name} NTK"] = rel_diff(ours, theirs)
        exact = (DEPTH + 1) * sigma0 ** (2 * DEPTH) * sqnorm / 2 ** DEPTH
        self_pairs[name] = tuple(float(np.abs(np.diagonal(k) / exact - 1).max()) for k in (ours.numpy(), theirs))
    return out, self_pairs


def run_nt(python: str, folder: Path, repeats: int, one_thread: bool) -> dict:
    """neural-tangents' side in its own venv; its kernels at the smallest P land in folder/nt.npz."""
    env = dict(os.environ, XLA_FLAGS=XLA_ONE_THREAD) if one_thread else None
    run = subprocess.run([python, __file__, "--nt", str(folder / "inputs.npz"), str(folder / "nt.npz"),
                          "--repeats", str(repeats)], check=True, capture_output=True, text=True, env=env)
    return json.loads(run.stdout.splitlines()[-1])


def main(argv) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--P", type=int, nargs="+", default=[100, 200, 500, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nt-python", default=NT_PYTHON)
    ap.add_argument("--nt", nargs=2, metavar=("INPUTS", "OUTPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nt:
        nt_main(*args.nt, args.repeats)
        return

    import torch

    from driftsim.tasks import make_task

    default_threads = torch.get_num_threads()
    inputs = {}
    for P in sorted(args.P):
        task = make_task("mnist", classes=[0, 1], n_per_class=P // 2, n_test=N_TEST, seed=0, root=args.root)
        xa, xb = torch.cat([task.x_train, task.x_test]), task.x_train
        assert xa.dtype == torch.float64
        inputs[P] = xa, xb
    ours, theirs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "inputs.npz", **{f"{k}{P}": x.numpy() for P, xs in inputs.items() for k, x in zip("ab", xs)})
        for threads in (default_threads, 1):
            torch.set_num_threads(threads)
            ours[threads] = {P: time_driftsim(xa, xb, args.repeats) for P, (xa, xb) in inputs.items()}
            theirs[threads] = run_nt(args.nt_python, folder, args.repeats, one_thread=threads == 1)
        kernels = dict(np.load(folder / "nt.npz"))
    P0 = min(args.P)
    agree, self_pairs = agreement(*inputs[P0], kernels)

    info = theirs[1]
    print(f"driftsim: torch {torch.__version__} (default {default_threads} threads); neural-tangents {info['version']}, "
          f"jax {info['jax']} on {', '.join(info['devices'])}; float64; least of {args.repeats}")
    print(f"agreement at P = {P0}, max |driftsim − nt| / |nt| (NTK_nt / σ0²), all entries / without the training "
          f"points' self-pairs; bench σ, σ0 = {BENCH}, check σ, σ0 = {CHECK}:")
    print("  " + ", ".join(f"{k} {a:.1e} / {b:.1e}" for k, (a, b) in agree.items()))
    print("  NTK on the self-pairs against its closed form, driftsim / nt: "
          + ", ".join(f"{k} {a:.1e} / {b:.1e}" for k, (a, b) in self_pairs.items()))
    print()
    print("| P | threads (torch / XLA) | driftsim NNGP | driftsim NTK | driftsim both | neural-tangents both (jit) "
          "| nt first call (compile) | driftsim / nt |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in ours:
        label = f"default ({default_threads}) / default" if threads != 1 else "1 / 1"
        for row in theirs[threads]["rows"]:
            d = ours[threads][row["P"]]
            print(f"| {row['P']} | {label} | {d['nngp_s'] * 1e3:.1f} ms | {d['ntk_s'] * 1e3:.1f} ms | "
                  f"{d['both_s'] * 1e3:.1f} ms | {row['both_s'] * 1e3:.1f} ms | {row['first_s'] * 1e3:.0f} ms "
                  f"({row['compile_s'] * 1e3:.0f} ms) | {d['both_s'] / row['both_s']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
