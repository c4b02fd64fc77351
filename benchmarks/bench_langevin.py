"""Throughput of the Langevin ensemble step on the CPU (figures in benchmarks/README.md).

For two sizes it measures, in the same run, weight updates per second of
  noise     — merely drawing the Gaussian noise for all the weights (torch's CPU sampler into
              preallocated buffers): a floor on the cost of any Langevin step, reference (a);
  driftsim  — ``driftsim.sim.schemes.langevin`` steps of the whole ensemble (noise prefetched on a worker
              thread and one intra-op thread fewer, as ``simulate`` runs on the CPU), also without
              prefetch and with antithetic pairs;
  autograd  — the loop a user would write: one module and optimizer per network, loss.backward(), an SGD
              step with weight decay γ (Euler–Maruyama) and added noise, reference (b);
plus the machine's dense matmul rate, for context. Every measurement runs in its own process, so that
its peak resident memory (ru_maxrss above the baseline after imports) can be compared with the
ensemble's weights.

    python benchmarks/bench_langevin.py                 # both sizes, torch's default thread count
    python benchmarks/bench_langevin.py --threads 1 --sizes small
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

import torch

from driftsim.sim.noise import leave_a_core
from driftsim.sim.schemes import init_state, langevin
from driftsim.sim.networks import init_ensemble
from driftsim.prior import Prior

SIZES = {  # E networks, width N, depth L, P training points, input dimension N0
    "small": dict(E=256, N=512, L=1, P=4, N0=5),  # the synthetic task: overhead-bound
    "large": dict(E=256, N=512, L=2, P=20, N0=50),  # noise-bound
    "paper": dict(E=5000, N=512, L=1, P=4, N0=5),  # the paper's ensemble on the synthetic task
}
METHODS = ["noise", "driftsim", "driftsim-noprefetch", "driftsim-antithetic", "autograd", "matmul"]
T, SIGMA, SIGMA0, DT = 0.1, 1.0, 1.0, 0.01


def _task(P: int, N0: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(P, N0, generator=g)
    x *= math.sqrt(N0) / x.norm(dim=1, keepdim=True)  # |x|²/N0 = 1
    return x, torch.tensor([1.0, -1.0]).repeat(P // 2)


def _weights(s: dict) -> int:
    return s["E"] * (s["N"] * s["N0"] + (s["L"] - 1) * s["N"] ** 2 + s["N"])


def _timed(step, steps: int, warmup: int = 2) -> float:
    """Median seconds per call of step()."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _driftsim(s: dict, prefetch: bool, antithetic: bool):
    x, y = _task(s["P"], s["N0"])
    net = init_ensemble(s["E"], s["N0"], s["N"], s["L"], "relu", SIGMA0, generator=torch.Generator().manual_seed(1),
                        antithetic=antithetic)
    scheme = langevin(x, y, Prior(T, SIGMA, SIGMA0))
    state = init_state(net, torch.Generator().manual_seed(2), prefetch=prefetch)
    stack = ExitStack()  # as simulate() runs it
    stack.enter_context(state.noise)
    stack.enter_context(leave_a_core(state.noise))
    return lambda: scheme.step(state, DT), stack.close


def _noise(s: dict):
    net = init_ensemble(s["E"], s["N0"], s["N"], s["L"], "relu", SIGMA0, generator=torch.Generator().manual_seed(1))
    buffers = [torch.empty(p.numel()) for p in net.params]
    gen = torch.Generator().manual_seed(2)

    def draw():
        for b in buffers:
            b.normal_(generator=gen)
    return draw, None


class _Net(torch.nn.Module):
    """One network of SPEC §1.1, as a user would write it."""

    def __init__(self, s: dict):
        super().__init__()
        self.hidden = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(s["N"], s["N0"]) * SIGMA0)]
            + [torch.nn.Parameter(torch.randn(s["N"], s["N"]) * SIGMA0) for _ in range(s["L"] - 1)])
        self.a = torch.nn.Parameter(torch.randn(s["N"]) * SIGMA0)

    def forward(self, x):
        h = x.T
        for w in self.hidden:
            h = torch.relu(w @ h / math.sqrt(w.shape[1]))
        return self.a @ h / math.sqrt(len(self.a))


def _autograd(s: dict):
    x, y = _task(s["P"], s["N0"])
    nets = [_Net(s) for _ in range(s["E"])]
    opts = [torch.optim.SGD(n.parameters(), lr=DT, weight_decay=T / SIGMA ** 2) for n in nets]
    std = math.sqrt(2 * T * DT)

    def step():
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            loss = 0.5 * ((net(x) - y) ** 2).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn_like(p), alpha=std)
    return step, None


def _matmul(s: dict):
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return (lambda: a @ b), None


def _step_flops(s: dict) -> float:
    """Multiply-adds ×2 of one step: forward, the backward's deltas and the weight updates."""
    E, N, L, P, N0 = s["E"], s["N"], s["L"], s["P"], s["N0"]
    per_pass = N * N0 * P + (L - 1) * N * N * P + N * P
    return 2 * E * (3 * per_pass - N * N0 * P)  # no delta is propagated back to the input


def worker(size: str, method: str, steps: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    s = SIZES[size]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    build = {"noise": _noise, "driftsim": lambda s: _driftsim(s, True, False),
             "driftsim-noprefetch": lambda s: _driftsim(s, False, False),
             "driftsim-antithetic": lambda s: _driftsim(s, True, True), "autograd": _autograd,
             "matmul": _matmul}[method]
    step, close = build(s)
    seconds = _timed(step, steps if method != "autograd" else max(2, steps // 4))
    if close is not None:
        close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # kB on Linux
    out = {"size": size, "method": method, "seconds_per_step": seconds, "peak_extra_mb": peak / 1024,
           "threads": torch.get_num_threads(), "weights": _weights(s), "weights_mb": _weights(s) * 4 / 2 ** 20}
    if method == "matmul":
        out["gflops"] = 2 * 2048 ** 3 / seconds / 1e9
    else:
        out["updates_per_s"] = _weights(s) / seconds
        if method.startswith("driftsim"):
            out["gflops"] = _step_flops(s) / seconds / 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.threads)))
        return
    rows = []
    for size in args.sizes:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--worker", size, method, "--steps", str(args.steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
            print(f"  {size:5s} {method:20s} {rows[-1]['seconds_per_step'] * 1e3:9.2f} ms/step", file=sys.stderr)
    print(f"torch {torch.__version__}, threads {rows[0]['threads']}\n")
    print("| size | method | ms/step | weight updates/s | vs noise (a) | vs autograd (b) | GFLOP/s "
          "| peak extra MB (× weights) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        ref = {r["method"]: r for r in rows if r["size"] == size}
        for r in (ref[m] for m in args.methods if m in ref):
            rate = r.get("updates_per_s")
            vs_a = f"{rate / ref['noise']['updates_per_s']:.0%}" if rate and "noise" in ref else ""
            vs_b = f"{rate / ref['autograd']['updates_per_s']:.1f}×" if rate and "autograd" in ref else ""
            print(f"| {size} | {r['method']} | {r['seconds_per_step'] * 1e3:.2f} | {rate or 0:.3g} | {vs_a} | {vs_b} | "
                  f"{r.get('gflops', 0):.1f} | {r['peak_extra_mb']:.0f} "
                  f"({r['peak_extra_mb'] / r['weights_mb']:.1f}×) |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
