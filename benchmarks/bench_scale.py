"""Scale of the theory (issue "Scale"): MNIST 0/1 from the standard files, P training points, 20 test points,
depth 3 relu, T = 1e-3, learning to 25σ²/T plus an equal drift, tol 1e-4; the theory's time (discretise +
solve) and the process's peak memory (RSS; on CUDA also the device's peak), each P in a fresh subprocess.

    python benchmarks/bench_scale.py [--root ../shared/data/mnist] [--P 100 200 400] [--ratio 1.0]
                                     [--device cpu|cuda] [--memory-gb G]

--ratio is σ0/σ (1: the stationary route; 0.5: the u-dependent one). Prints one JSON line per P.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def one(P: int, ratio: float, device: str, root: str, memory_gb: float | None) -> dict:
    import torch

    from driftsim.prior import Prior
    from driftsim.tasks import make_task
    from driftsim.theory.discretisation import discretise
    from driftsim.theory.mean import solve
    from driftsim.times import record_times

    prior = Prior(T=1e-3, sigma=1.0, sigma0=ratio)
    task = make_task("mnist", classes=[0, 1], n_per_class=P // 2, n_test=20, seed=0, root=root)
    dev = torch.device(device)
    x, y, xt = task.x_train.to(dev), task.y_train.to(dev), task.x_test.to(dev)
    t_end = 25 / prior.gamma
    problem = dict(depth=3, activation="relu", prior=prior, t_learn=record_times(t_end, 40), t0=t_end,
                   t_drift=record_times(t_end, 40), tol=1e-4)
    extra = {} if memory_gb is None else {"memory_gb": memory_gb}
    start, cpu = time.perf_counter(), time.process_time()
    disc = discretise(x, xt, **problem, **extra)
    mid, cpu_mid = time.perf_counter(), time.process_time()
    res = solve(x, y, xt, discretisation=disc, progress=False, **problem)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    end, cpu_end = time.perf_counter(), time.process_time()
    out = {"P": P, "ratio": ratio, "device": device, "discretise_s": round(mid - start, 2),
           "solve_s": round(end - mid, 2), "theory_s": round(end - start, 2),
           "cpu_discretise_s": round(cpu_mid - cpu, 2), "cpu_solve_s": round(cpu_end - cpu_mid, 2), "grid": res.grid_size,
           "rates": int(disc.ndk.alpha.numel()), "u_nodes": int(disc.ndk.u_nodes.numel()),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "f_test_last": float(res.drift.f_test[-1, 0])}
    if dev.type == "cuda":
        out["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--P", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--ratio", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--memory-gb", type=float, default=None)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.P[0], a.ratio, a.device, a.root, a.memory_gb)))
        return
    for P in a.P:
        cmd = [sys.executable, __file__, "--one", "--P", str(P), "--ratio", str(a.ratio), "--device", a.device,
               "--root", a.root] + ([] if a.memory_gb is None else ["--memory-gb", str(a.memory_gb)])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout.strip() or json.dumps({"P": P, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
