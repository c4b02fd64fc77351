"""Ensembles of SPEC §1.1 networks: hand-written gradients and NTK against autograd, initial statistics,
antithetic pairs, and the infinite-width output variance at t = 0 (NNGP at σ0, SPEC §3.1)."""
import math

import pytest
import torch

from driftsim.activations import get_activation
from driftsim.sim.networks import Ensemble, init_ensemble, resolve_device, resolve_dtype


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(P: int = 5, N0: int = 4, seed: int = 1):
    g = _gen(seed)
    return (torch.randn(P, N0, dtype=torch.float64, generator=g),
            torch.randn(P, dtype=torch.float64, generator=g))


def _autograd_net(net: Ensemble) -> tuple[Ensemble, list[torch.Tensor]]:
    leaves = [p.detach().clone().requires_grad_() for p in net.params]
    return Ensemble(leaves[:-1], leaves[-1], net.activation), leaves


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh", "linear"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gradient_matches_autograd(activation, depth):
    x, y = _data()
    net = init_ensemble(3, 4, 7, depth, activation, 1.3, generator=_gen(), dtype="float64")
    anet, leaves = _autograd_net(net)
    loss = 0.5 * ((anet.forward(x).f - y) ** 2).sum()
    expected = torch.autograd.grad(loss, leaves)
    for got, want in zip(net.gradient(x, y), expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_accumulate_is_an_affine_update_of_out():
    x, y = _data()
    net = init_ensemble(4, 4, 6, 2, "erf", 1.0, generator=_gen(), dtype="float64")
    grads = net.gradient(x, y)
    out = [p.clone() for p in net.params]
    fw = net.forward(x)
    r = fw.f - y
    net.accumulate_(out, fw, net.backward(fw, r), r, alpha=-0.3, beta=0.7)
    for o, p, g in zip(out, net.params, grads):
        torch.testing.assert_close(o, 0.7 * p - 0.3 * g, rtol=0, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 3])
def test_ntk_matches_autograd_jacobian(depth):
    x, _ = _data()
    net = init_ensemble(3, 4, 6, depth, "relu", 1.2, generator=_gen(), dtype="float64")
    anet, leaves = _autograd_net(net)
    rows = []
    for mu in range(len(x)):
        grads = torch.autograd.grad(anet.forward(x).f[:, mu].sum(), leaves)
        rows.append(torch.cat([g.reshape(3, -1) for g in grads], 1))
    jac = torch.stack(rows, 1)  # [E, P, params]
    torch.testing.assert_close(net.ntk(x), jac @ jac.transpose(1, 2), rtol=0, atol=1e-10)


def test_forward_shapes_dtypes_and_seeding():
    x, _ = _data(P=3, N0=4)
    net = init_ensemble(6, 4, 8, 2, "relu", 1.0, generator=_gen(5))
    assert net.dtype == torch.float32 and net.device.type == "cpu"
    assert [tuple(w.shape) for w in net.hidden] == [(6, 8, 4), (6, 8, 8)] and net.readout.shape == (6, 8)
    fw = net.forward(x)  # float64 inputs are cast to the ensemble's dtype
    assert fw.f.shape == (6, 3) and fw.f.dtype == torch.float32 and fw.activity.shape == (6, 8, 3)
    again = init_ensemble(6, 4, 8, 2, "relu", 1.0, generator=_gen(5))
    other = init_ensemble(6, 4, 8, 2, "relu", 1.0, generator=_gen(6))
    assert all(torch.equal(a, b) for a, b in zip(net.params, again.params))
    assert not torch.equal(net.readout, other.readout)
    net64 = init_ensemble(6, 4, 8, 2, "relu", 1.0, generator=_gen(5), dtype="float64")
    assert net64.forward(x).f.dtype == torch.float64


def test_initial_weights_are_iid_normal_sigma0():
    sigma0 = 1.7
    net = init_ensemble(32, 10, 64, 2, "relu", sigma0, generator=_gen(2))
    w = torch.cat([p.flatten() for p in net.params]).double()
    se = sigma0 ** 2 * math.sqrt(2 / w.numel())
    assert abs(w.mean()) < 4 * sigma0 / math.sqrt(w.numel())
    assert abs(w.var() - sigma0 ** 2) < 4 * se


def test_antithetic_pairs_share_hidden_weights_and_flip_the_output():
    x, _ = _data()
    net = init_ensemble(6, 4, 5, 2, "erf", 1.0, generator=_gen(), dtype="float64", antithetic=True)
    for w in net.hidden:
        assert torch.equal(w[0::2], w[1::2])
    assert torch.equal(net.readout[0::2], -net.readout[1::2])
    f = net.forward(x).f
    torch.testing.assert_close(f[0::2], -f[1::2])
    assert not torch.equal(net.hidden[0][0], net.hidden[0][2])  # different pairs are independent
    with pytest.raises(ValueError, match="sim.ensemble=5"):
        init_ensemble(5, 4, 5, 1, "relu", 1.0, generator=_gen(), antithetic=True)


def _nngp_variance(x: torch.Tensor, depth: int, activation: str, sigma0: float) -> torch.Tensor:
    """SPEC §3.1 at t = t' = 0 (C = σ0² in every layer): Var f(x) = σ0² K_L(x, x), from the activation's
    own Gaussian expectations (independent of driftsim.theory.kernels)."""
    act = get_activation(activation)
    q = sigma0 ** 2 * (x * x).sum(1) / x.shape[1]
    for _ in range(depth - 1):
        q = sigma0 ** 2 * act.expect_diag(q)
    return sigma0 ** 2 * act.expect_diag(q)


@pytest.mark.parametrize("activation,depth,sigma0", [("relu", 1, 0.7), ("erf", 1, 1.5), ("relu", 2, 1.3),
                                                     ("erf", 2, 0.8)])
def test_output_variance_at_init_is_the_nngp_at_sigma0(activation, depth, sigma0):
    E, N = 3000, 128
    x = torch.randn(3, 6, dtype=torch.float64, generator=_gen(3))
    net = init_ensemble(E, 6, N, depth, activation, sigma0, generator=_gen(4))
    f = net.forward(x).f.double()
    want = _nngp_variance(x, depth, activation, sigma0)
    se = f.pow(2).std(0) / math.sqrt(E)  # Monte-Carlo error of the second moment
    # exact at any width for depth 1 (a ⟂ h) and for relu (homogeneous); otherwise O(1/N): allowance 2/N relative
    allowance = 0.0 if depth == 1 else 2.0 / N * want
    assert torch.all((f.pow(2).mean(0) - want).abs() < 4 * se + allowance)
    assert f.mean(0).abs().max() < 4 * (want / E).sqrt().max()


def test_device_and_dtype_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            resolve_device("cuda")
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError, match="sim.dtype"):
        resolve_dtype("float16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ensemble_matches_cpu_gradient():
    x, y = _data()
    cpu = init_ensemble(3, 4, 7, 2, "erf", 1.1, generator=_gen(), dtype="float64")
    gpu = Ensemble([w.cuda() for w in cpu.hidden], cpu.readout.cuda(), cpu.activation)
    for a, b in zip(cpu.gradient(x, y), gpu.gradient(x.cuda(), y.cuda())):
        torch.testing.assert_close(a, b.cpu(), rtol=0, atol=1e-10)
