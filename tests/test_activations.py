"""SPEC §4: closed forms against quadrature and Monte Carlo."""
import math

import pytest
import torch

from driftsim.activations import ACTIVATIONS, Activation, get_activation

pytestmark = pytest.mark.usefixtures("float64")

COVS = torch.tensor([[1.0, 1.0, 0.3], [0.5, 2.0, -0.6], [3.0, 0.2, 0.7], [1.5, 1.5, 1.5], [0.1, 4.0, 0.0]],
                    dtype=torch.float64)


def _mc(act: Activation, qa, qb, c, n=400_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(2, n, generator=g)
    u = math.sqrt(qa) * z1
    v = (c / math.sqrt(qa)) * z1 + math.sqrt(max(qb - c * c / qa, 0.0)) * z2
    out = []
    for vals in (act.phi(u) * act.phi(v), act.dphi(u) * act.dphi(v), act.phi(u) ** 2, act.phi(u)):
        out.append((vals.mean().item(), vals.std().item() / math.sqrt(n)))
    return out


def _closed_and_quadrature(name: str, nodes: int):
    """(closed form, the same φ by quadrature, (K, K') of each) on the covariances COVS."""
    act = ACTIVATIONS[name]
    quad = Activation.custom(name + "-quad", act.phi, act.dphi, nodes=nodes)
    qa, qb, c = COVS.T
    return act, quad, act.expect(qa, qb, c), quad.expect(qa, qb, c)


def test_erf_quadrature_matches_closed_form():
    erf, quad, (k, kp), (kq, kpq) = _closed_and_quadrature("erf", nodes=96)
    assert torch.allclose(kq, k, atol=1e-8, rtol=0)
    assert torch.allclose(kpq, kp, atol=1e-8, rtol=0)
    assert torch.allclose(quad.expect_diag(COVS[:, 0]), erf.expect_diag(COVS[:, 0]), atol=1e-8, rtol=0)


def test_relu_quadrature_matches_closed_form_to_stated_tolerance():
    """The kink limits Gauss–Hermite to first order: 3e-2 relative at 48 nodes (activations.py docstring)."""
    relu, quad, (k, kp), (kq, kpq) = _closed_and_quadrature("relu", nodes=48)
    assert torch.allclose(kq, k, rtol=5e-2, atol=1e-4)
    assert torch.allclose(kpq, kp, rtol=0, atol=2e-2)  # E[φ'φ'] of a step function: a 2-D indicator
    assert torch.allclose(quad.mean(COVS[:, 0]), relu.mean(COVS[:, 0]), rtol=5e-2)


@pytest.mark.parametrize("name", ["linear", "relu", "erf", "tanh", "gelu", "softplus", "sin"])
def test_expectations_match_monte_carlo(name):
    act = get_activation(name)
    for qa, qb, c in COVS.tolist():
        (k, sk), (kp, skp), (d, sd), (m, sm) = _mc(act, qa, qb, c)
        K, KP = act.expect(torch.tensor(qa), torch.tensor(qb), torch.tensor(c))
        assert abs(K.item() - k) < 5 * sk + 1e-12, (name, qa, qb, c)
        assert abs(KP.item() - kp) < 5 * skp + 1e-12
        assert abs(act.expect_diag(torch.tensor(qa)).item() - d) < 5 * sd + 1e-12
        assert abs(act.mean(torch.tensor(qa)).item() - m) < 5 * sm + 1e-12


def test_closed_forms_at_special_values():
    relu, erf = ACTIVATIONS["relu"], ACTIVATIONS["erf"]
    q = torch.tensor(2.0)
    k, kp = relu.expect(q, q, q)  # identical arguments: E[relu(u)²] = q/2, E[H(u)] = 1/2
    assert k.item() == pytest.approx(1.0) and kp.item() == pytest.approx(0.5)
    k, kp = relu.expect(q, q, torch.tensor(0.0))  # independent: (E relu)² = q/(2π)
    assert k.item() == pytest.approx(q.item() / (2 * math.pi)) and kp.item() == pytest.approx(0.25)
    assert erf.expect(q, q, torch.tensor(0.0))[0].item() == 0.0
    assert erf.mean(q).item() == 0.0 and ACTIVATIONS["linear"].mean(q).item() == 0.0


def test_dtype_and_shape_respected():
    act = get_activation("tanh")
    qa = torch.ones(3, 1, dtype=torch.float32)
    qb = torch.ones(1, 4, dtype=torch.float32)
    k, kp = act.expect(qa, qb, 0.5 * torch.ones(3, 4, dtype=torch.float32))
    assert k.shape == (3, 4) and k.dtype == torch.float32


def test_unknown_activation_names_key_and_allowed():
    with pytest.raises(ValueError, match=r"model.activation='swish'.*allowed"):
        get_activation("swish")
