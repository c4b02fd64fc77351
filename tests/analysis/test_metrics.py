"""The field's drift metrics (driftsim.analysis.metrics): each one against a computation written here
(np.corrcoef loops over sessions, cells and stimuli; rsatoolbox's RDMs and RDM comparison as an oracle
for the similarity structure), invariance to the order of cells, known answers on constructed
populations (identical sessions → 1, independent sessions → 0 within 4 standard errors, drift index 0
and ≈ 1), decoders on separable and shuffled classes, and a clear error for every bad input."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm, compare
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftsim.analysis import metrics as m

TIME = np.array([0.0, 1.0, 3.0, 7.0])


def counts(rng, S=4, C=60, X=10, R=6, same=True, gain=3.0):
    """Poisson spike counts [S, C, X, R] around gamma-distributed tuning curves: one tuning for every
    session (same=True) or an independent one per session."""
    shape = (1 if same else S, C, X)
    rate = gain * rng.gamma(2.0, 1.0, size=shape)
    return rng.poisson(np.broadcast_to(rate[..., None], (S, C, X, R))).astype(float)


def corr(a, b):
    return np.corrcoef(a, b)[0, 1]


def trial_mean(v):
    return v.mean(axis=-1) if v.ndim == 4 else v


# --- the layout ---------------------------------------------------------------------------------------


def test_as_responses_builds_the_canonical_layout_and_the_validator_reorders_any():
    rng = np.random.default_rng(0)
    v = rng.poisson(2.0, size=(4, 5, 3, 2))
    r = m.as_responses(v, time=TIME, labels=[0, 1, 1], cells=list("abcde"), stimuli=[10, 11, 12])
    assert r.dims == ("session", "cell", "stimulus", "trial") and r.dtype == np.float64
    assert list(r.time.values) == list(TIME) and list(r.label.values) == [0, 1, 1]
    assert list(r.cell.values) == list("abcde") and list(r.stimulus.values) == [10, 11, 12]
    shuffled = r.transpose("trial", "stimulus", "cell", "session")
    assert m.check_responses(shuffled).dims == r.dims
    np.testing.assert_array_equal(m.check_responses(shuffled).values, v)
    assert list(m.as_responses(v[..., 0]).time.values) == [0.0, 1.0, 2.0, 3.0]


# --- Deitch, Rubin & Ziv -------------------------------------------------------------------------------


def test_pv_correlation_keeps_the_cells_active_in_both_sessions():
    # one stimulus; cell 3 silent in session 0: the active cells [1, 2, 3] ∝ [2, 4, 6] correlate exactly
    v = np.array([[1.0, 2.0, 3.0, 0.0], [2.0, 4.0, 6.0, 5.0]])[:, :, None]
    r = m.as_responses(v)
    assert m.pv_correlation(r).values[0, 1] == pytest.approx(1.0)
    assert m.pv_correlation(r, active_only=False).values[0, 1] == pytest.approx(corr(v[0, :, 0], v[1, :, 0]))


def test_pv_correlation_against_corrcoef_over_active_cells():
    rng = np.random.default_rng(1)
    v = counts(rng, same=False) + counts(rng)
    v[1, :7] = 0.0  # cells silent in one session or another: each pair keeps its own cells
    v[3, 5:12] = 0.0
    r = m.as_responses(v, time=TIME)
    pv = trial_mean(v)
    S, C, X = pv.shape
    want = np.zeros((X, S, S))
    for s in range(S):
        for u in range(S):
            keep = (pv[s].mean(axis=1) > 0) & (pv[u].mean(axis=1) > 0)
            for x in range(X):
                want[x, s, u] = corr(pv[s, keep, x], pv[u, keep, x])
    per = m.pv_correlation(r, per_stimulus=True)
    assert per.dims == ("stimulus", "session", "session_other")
    np.testing.assert_allclose(per.values, want, atol=1e-12)
    out = m.pv_correlation(r)
    np.testing.assert_allclose(out.values, want.mean(axis=0), atol=1e-12)
    assert out.attrs["cells_kept_min"] == C - 12
    np.testing.assert_array_equal(out.time.values, TIME)
    np.testing.assert_array_equal(out.time_other.values, TIME)


def test_pv_correlation_of_all_cells_for_signed_responses():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(3, 30, 5)) + rng.normal(size=(1, 30, 5))
    want = np.array([[np.mean([corr(v[s, :, x], v[u, :, x]) for x in range(5)]) for u in range(3)]
                     for s in range(3)])
    np.testing.assert_allclose(m.pv_correlation(m.as_responses(v), active_only=False).values, want, atol=1e-12)


def test_elapsed_curve_averages_each_off_diagonal_and_keeps_leading_dims():
    rng = np.random.default_rng(3)
    A, S = 3, 4
    values = rng.normal(size=(A, S, S))
    values[1, 0, 2] = np.nan  # left out, as MATLAB's omitnan does
    matrix = xr.DataArray(values, dims=("network", "session", "session_other"),
                          coords={"network": [7, 8, 9], "time": ("session", TIME)})
    curve = m.elapsed_curve(matrix)
    assert curve.dims == ("network", "lag") and list(curve.network.values) == [7, 8, 9]
    for lag in range(S):
        pairs = [(s, s + lag) for s in range(S - lag)]
        for a in range(A):
            want = np.nanmean([values[a, i, j] for i, j in pairs])
            assert curve.values[a, lag] == pytest.approx(want)
        assert curve.elapsed.values[lag] == pytest.approx(np.mean([TIME[j] - TIME[i] for i, j in pairs]))
    # the metrics' own matrices carry the session times
    pv = m.pv_correlation(m.as_responses(counts(rng), time=TIME))
    np.testing.assert_allclose(m.elapsed_curve(pv).elapsed.values, [0.0, 7 / 3, 4.5, 7.0])  # (1+2+4)/3, (3+6)/2, 7


def test_rate_correlation_against_corrcoef_of_mean_rates():
    rng = np.random.default_rng(4)
    v = counts(rng, same=False) + counts(rng)
    rates = trial_mean(v).mean(axis=-1)
    np.testing.assert_allclose(m.rate_correlation(m.as_responses(v)).values, np.corrcoef(rates), atol=1e-12)


def test_tuning_correlation_per_cell_mean_and_median_skipping_constant_cells():
    rng = np.random.default_rng(5)
    v = counts(rng, same=False) + counts(rng)
    v[1, 4] = 3.0  # cell 4 is flat in session 1, cell 9 in session 2: left out of the pairs with them
    v[2, 9] = 0.0
    tc = trial_mean(v)
    S, C, _ = tc.shape
    per = np.full((S, S, C), np.nan)
    for s in range(S):
        for u in range(S):
            for c in range(C):
                if np.ptp(tc[s, c]) > 0 and np.ptp(tc[u, c]) > 0:
                    per[s, u, c] = corr(tc[s, c], tc[u, c])
    r = m.as_responses(v)
    mean = m.tuning_correlation(r)
    np.testing.assert_allclose(mean.values, np.nanmean(per, axis=-1), atol=1e-12)
    np.testing.assert_allclose(m.tuning_correlation(r, reduce="median").values, np.nanmedian(per, axis=-1),
                               atol=1e-12)
    assert mean.attrs["cells_skipped"] == 2


def test_similarity_is_one_minus_the_correlation_rdm_of_rsatoolbox():
    rng = np.random.default_rng(6)
    v = counts(rng, same=False) + counts(rng)
    pv = trial_mean(v)
    sim = m.similarity(m.as_responses(v, stimuli=np.arange(10) + 100, labels=np.arange(10) % 2))
    assert sim.dims == ("session", "stimulus", "stimulus_other")
    assert list(sim.stimulus_other.values) == list(range(100, 110)) and "label_other" in sim.coords
    for s in range(len(pv)):
        rdm = calc_rdm(Dataset(pv[s].T), method="correlation").get_matrices()[0]  # observations: stimuli
        np.testing.assert_allclose(1 - sim.values[s], rdm, atol=1e-12)


def test_rsa_stability_unnormalised_is_rsatoolbox_compare_corr():
    rng = np.random.default_rng(7)
    v = counts(rng, same=False) + counts(rng)
    pv = trial_mean(v)
    rdms = [calc_rdm(Dataset(p.T), method="correlation") for p in pv]
    want = np.array([[compare(a, b, method="corr")[0, 0] for b in rdms] for a in rdms])
    out = m.rsa_stability(m.as_responses(v), normalise=False)
    np.testing.assert_allclose(out.values, want, atol=1e-12)
    assert out.attrs["normalised"] == 0
    # without trials there is nothing to split: normalise=True gives the same, marked unnormalised
    flat = m.rsa_stability(m.as_responses(pv))
    np.testing.assert_allclose(flat.values, want, atol=1e-12)
    assert flat.attrs["normalised"] == 0


def test_rsa_stability_normalised_by_the_split_half_structure():
    rng = np.random.default_rng(8)
    v = counts(rng, R=7, same=False) + counts(rng, R=7)
    even, odd = v[..., 1::2].mean(-1), v[..., 0::2].mean(-1)  # trials numbered from 1
    i, j = np.triu_indices(v.shape[2], k=1)

    def triangle(p):
        return np.corrcoef(p.T)[i, j]

    S = len(v)
    split = np.array([corr(triangle(even[s]), triangle(odd[s])) for s in range(S)])
    want = np.array([[0.5 * (corr(triangle(even[s]), triangle(odd[u])) + corr(triangle(odd[s]), triangle(even[u])))
                      / np.sqrt(split[s] * split[u]) for u in range(S)] for s in range(S)])
    out = m.rsa_stability(m.as_responses(v))
    np.testing.assert_allclose(out.values, want, atol=1e-12)
    np.testing.assert_allclose(out.attrs["split_half"], split, atol=1e-12)
    np.testing.assert_allclose(np.diag(out.values), 1.0)
    # session 2 shuffled into noise whose halves happen to anti-correlate (w = −0.23): no normalised value
    noise = v.copy()
    noise[2] = np.random.default_rng(4).permutation(noise[2].reshape(-1)).reshape(noise[2].shape)
    unreliable = m.rsa_stability(m.as_responses(noise))
    assert unreliable.attrs["split_half"][2] < 0
    assert np.isnan(unreliable.values[2]).all() and np.isnan(unreliable.values[:, 2]).all()
    assert np.isfinite(np.delete(np.delete(unreliable.values, 2, 0), 2, 1)).all()


# --- Marks & Goard -------------------------------------------------------------------------------------


def test_drift_index_is_the_even_odd_index_of_marks_and_goard():
    rng = np.random.default_rng(9)
    v = counts(rng, R=5, same=False) + counts(rng, R=5, gain=0.3)
    v[2, 3, :, 1::2] = 1.0  # cell 3's even trials are flat in session 2: undefined there
    S, C = v.shape[:2]
    even, odd = v[..., 1::2].mean(-1), v[..., 0::2].mean(-1)
    want = np.full((S, C), np.nan)
    for s in range(S):
        for c in range(C):
            e0, o0, e, o = even[0, c], odd[0, c], even[s, c], odd[s, c]
            if min(np.ptp(e0), np.ptp(o0), np.ptp(e), np.ptp(o)) == 0:
                continue
            ws = max(0.5 * (corr(e0, o0) + corr(e, o)), 0.0)
            bs = max(0.5 * (corr(e0, o) + corr(e, o0)), 0.0)
            ws = 0.001 if ws <= 0 else ws
            want[s, c] = (ws - bs) / (ws + bs)
    out = m.drift_index(m.as_responses(v))
    assert out.dims == ("session", "cell")
    np.testing.assert_allclose(out.values, want, atol=1e-12)
    assert out.attrs["cells_undefined"] == 1
    assert (want[0][np.isfinite(want[0])] >= 0).all()  # session 0 against itself: 0, or 1 when unreliable


def test_drift_index_is_zero_without_drift_and_near_one_for_independent_tuning():
    rng = np.random.default_rng(10)
    same = m.drift_index(m.as_responses(counts(rng, C=100, X=100, R=8))).values
    assert np.all(same[0] == 0)
    # no drift, only trial noise: CC_ws and CC_bs estimate the same correlation
    mean, sem = same[1:].mean(), same[1:].std() / np.sqrt(same[1:].size)
    assert abs(mean) < 4 * sem + 1e-3
    new = m.drift_index(m.as_responses(counts(rng, C=100, X=100, R=8, same=False))).values
    # CC_bs is a rectified null correlation, E max(0, N(0, 1/X)) ≈ 0.4/√X = 0.04: RDI ≈ 1 − 0.1
    assert new[1:].mean() > 0.85 and np.median(new[1:]) > 0.85


# --- Aitken et al. -------------------------------------------------------------------------------------


def groups_by_hand(v, s):
    """Per stimulus: participation ratio and principal directions from the eigen-decomposition of the
    trial covariance (the test's independent route to the PCA)."""
    out = []
    for x in range(v.shape[2]):
        lam, vec = np.linalg.eigh(np.cov(v[s, :, x, :]))  # cells × cells over trials
        lam, vec = lam[::-1].clip(min=0), vec[:, ::-1]
        D = lam.sum() ** 2 / (lam**2).sum()
        out.append((D, vec[:, : int(np.ceil(D - 1e-9))].T))
    return out


def test_participation_ratio_and_geometry_against_the_trial_covariance():
    rng = np.random.default_rng(11)
    v = counts(rng, C=15, X=6, R=9, same=False) + counts(rng, C=15, X=6, R=9)
    r = m.as_responses(v, time=TIME)
    for s in range(4):
        assert m.participation_ratio(r, s) == pytest.approx(np.mean([D for D, _ in groups_by_hand(v, s)]))
    first, last = groups_by_hand(v, 0), groups_by_hand(v, 3)
    d = v[3].mean(-1) - v[0].mean(-1)  # [C, X]
    x0, x1 = v[0].mean(-1), v[3].mean(-1)
    got = m.drift_geometry(r, 0, -1)
    want = {
        "participation_ratio": np.mean([D for D, _ in first]),
        "dimension": np.mean([len(W) for _, W in first]),
        "drift_in_variational_fraction": np.mean([np.sum((W @ d[:, x]) ** 2) / (d[:, x] @ d[:, x])
                                                  for x, (_, W) in enumerate(first)]),
        "chance_fraction": np.mean([len(W) / 15 for _, W in first]),
        "subspace_overlap": np.mean([np.sum((W @ W1.T) ** 2) / min(len(W), len(W1))
                                     for (_, W), (_, W1) in zip(first, last)]),
        "angle": np.mean([np.degrees(np.arccos(x0[:, x] @ x1[:, x]
                                               / (np.linalg.norm(x0[:, x]) * np.linalg.norm(x1[:, x]))))
                          for x in range(6)]),
        "relative_magnitude": np.mean([np.linalg.norm(d[:, x]) / np.linalg.norm(x0[:, x]) for x in range(6)]),
    }
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    # group="session": one group of all (stimulus, trial) responses
    samples = v[1].reshape(15, -1)
    lam = np.linalg.eigvalsh(np.cov(samples)).clip(min=0)
    assert m.participation_ratio(r, 1, group="session") == pytest.approx(lam.sum() ** 2 / (lam**2).sum())


def test_geometry_known_answers_on_constructed_groups():
    # each group varies along e0 and e1 only, with equal variance: D = 2 exactly; n = 10 cells
    C, X = 10, 3
    e = np.eye(C)
    pattern = np.stack([e[0], -e[0], e[1], -e[1]], axis=-1)  # [C, 4 trials]
    base = 5.0 + np.arange(C)[:, None] * 0.1
    s0 = base[:, None, :] + pattern[:, None, :] * np.ones((1, X, 1))
    inside = s0 + 2.0 * e[1][:, None, None]  # drift along a variational direction
    outside = s0 + 2.0 * e[5][:, None, None]  # drift orthogonal to it
    half = base[:, None, :] + np.stack([e[1], -e[1], e[7], -e[7]], axis=-1)[:, None, :] * np.ones((1, X, 1))
    r = m.as_responses(np.stack([s0, inside, outside, half]))
    assert m.participation_ratio(r, 0) == pytest.approx(2.0)
    g = m.drift_geometry(r, 0, 1)
    assert g["dimension"] == 2 and g["chance_fraction"] == pytest.approx(0.2)
    assert g["drift_in_variational_fraction"] == pytest.approx(1.0) and g["subspace_overlap"] == pytest.approx(1.0)
    assert m.drift_geometry(r, 0, 2)["drift_in_variational_fraction"] == pytest.approx(0.0, abs=1e-12)
    assert m.drift_geometry(r, 0, 3)["subspace_overlap"] == pytest.approx(0.5)
    assert np.isnan(m.drift_geometry(r, 0, 0)["drift_in_variational_fraction"])  # no drift: undefined


def test_subspace_overlap_of_random_subspaces_is_near_chance():
    # independent isotropic noise in n = 200 cells: Γ ≈ max(⌈D⌉, ⌈D′⌉)/n (Aitken et al., S2 Fig details)
    rng = np.random.default_rng(12)
    r = m.as_responses(rng.normal(size=(2, 200, 20, 6)))
    g = m.drift_geometry(r)
    assert g["dimension"] <= 5
    assert abs(g["subspace_overlap"] - g["chance_fraction"]) < 0.02


# --- decoders ------------------------------------------------------------------------------------------


def classes(rng, S=3, C=30, X=40, R=5, same=True, noise=1.0):
    """Responses [S, C, X, R] whose class (label = stimulus parity) sets the mean: one class axis for
    every session (same=True) or a new one per session."""
    y = np.arange(X) % 2
    axis = rng.normal(size=(1 if same else S, C, 1, 1))
    signal = axis * (2 * y - 1)[None, None, :, None]
    return np.broadcast_to(signal, (S, C, X, R)) + noise * rng.normal(size=(S, C, X, R)), y


def test_decoders_against_a_scikit_learn_pipeline():
    rng = np.random.default_rng(13)
    v, y = classes(rng, same=False, noise=3.0)
    out = m.decoders(m.as_responses(v, labels=y), seed=4)
    yy = np.repeat(y, v.shape[-1])
    samples = v.transpose(0, 2, 3, 1).reshape(len(v), -1, v.shape[1])  # (stimulus, trial) samples

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    folds = StratifiedKFold(5, shuffle=True, random_state=4)
    # each session z-scored once (label-free), then cross-validated; the fixed decoder keeps session 0's scaling
    retrained = [cross_val_score(LogisticRegression(max_iter=1000), StandardScaler().fit_transform(x), yy,
                                 cv=folds).mean() for x in samples]
    first = model().fit(samples[0], yy)
    fixed = [retrained[0]] + [first.score(x, yy) for x in samples[1:]]
    # the folds' fits start from the previous fold's solution: the same optimum to lbfgs's tolerance, within
    # which a sample next to the boundary may change sides (one here: 0.96 against 0.955)
    np.testing.assert_allclose(out.retrained.values, retrained, rtol=0, atol=2 / len(yy))
    np.testing.assert_allclose(out.fixed.values[1:], fixed[1:])  # one fit on session 0, scored elsewhere: exact
    np.testing.assert_allclose(out.relative_cross.values, out.fixed.values / out.retrained.values)


def test_fixed_decoder_keeps_a_stable_code_and_loses_a_new_one():
    rng = np.random.default_rng(14)
    v, y = classes(rng)
    stable = m.decoders(m.as_responses(v, labels=y))
    assert (stable.fixed > 0.95).all() and (stable.retrained > 0.95).all()
    # a new random class axis in every session: the fixed decoder is at chance on average over
    # populations (one population's overlap of random axes moves it either way), the retrained one is not
    moved = [m.decoders(m.as_responses(classes(rng, S=2, same=False)[0], labels=y))
             for _ in range(16)]
    fixed = np.array([d.fixed.values[1] for d in moved])
    assert abs(fixed.mean() - 0.5) < 4 * fixed.std(ddof=1) / np.sqrt(len(fixed))
    assert all((d.retrained > 0.95).all() and d.relative_cross[0] == 1.0 for d in moved)


def test_shuffled_labels_decode_at_chance():
    rng = np.random.default_rng(15)
    v, y = classes(rng)
    scores = [m.decoders(m.as_responses(v), labels=rng.permutation(y), seed=k).retrained.values.mean()
              for k in range(6)]
    n = 6 * y.size * v.shape[-1] * len(v)
    # each permutation keeps correlated samples (trials of one stimulus): allow 3× the binomial error
    assert abs(np.mean(scores) - 0.5) < 3 * 4 * np.sqrt(0.25 / n)


# --- properties across metrics -------------------------------------------------------------------------


def every_metric(r):
    out = m.summary(r, labels=np.arange(r.sizes["stimulus"]) % 2)
    out["drift_index_cells"] = m.drift_index(r)
    out["similarity"] = m.similarity(r)
    return out


def test_every_metric_is_invariant_to_the_order_of_cells():
    rng = np.random.default_rng(16)
    v = counts(rng, same=False) + counts(rng)
    r = m.as_responses(v, time=TIME, cells=np.arange(v.shape[1]))
    permuted = r.isel(cell=rng.permutation(v.shape[1]))
    a, b = every_metric(r), every_metric(permuted)
    for name in a.data_vars:
        x, y = (d[name].sortby("cell") if "cell" in d[name].dims else d[name] for d in (a, b))
        np.testing.assert_allclose(x.values, y.values, atol=1e-12, err_msg=name)
    assert set(a.data_vars) >= {"pv_correlation", "rate_correlation", "tuning_correlation", "rsa_stability",
                                "decoder_fixed", "decoder_retrained", "drift_index", "participation_ratio",
                                "subspace_overlap"}


def test_summary_gathers_the_metrics_and_says_what_it_skipped():
    rng = np.random.default_rng(17)
    v = counts(rng, same=False) + counts(rng)
    r = m.as_responses(v, labels=np.arange(10) % 2)
    out = m.summary(r, seed=3)
    xr.testing.assert_identical(out.pv_correlation, m.pv_correlation(r))
    xr.testing.assert_identical(out.rsa_stability, m.rsa_stability(r))
    np.testing.assert_array_equal(out.decoder_fixed.values, m.decoders(r, seed=3).fixed.values)
    np.testing.assert_allclose(out.drift_index.values, np.nanmean(m.drift_index(r).values, axis=1))
    assert out.participation_ratio.values[2] == pytest.approx(m.participation_ratio(r, 2))
    assert out.attrs["skipped"] == ""
    flat = m.summary(m.as_responses(trial_mean(v)))
    assert "decoder_fixed" not in flat and "drift_index" not in flat and "rsa_stability" in flat
    assert "no labels" in flat.attrs["skipped"] and "fewer than 2 trials" in flat.attrs["skipped"]
    one = m.summary(m.as_responses(trial_mean(v)[:, :, :1]))
    assert set(one.data_vars) == {"pv_correlation", "rate_correlation"} and "one stimulus" in one.attrs["skipped"]


def test_summary_of_data_that_leave_metrics_undefined_has_the_same_variables_as_nan():
    """One active cell leaves the PV correlation undefined (a correlation over cells needs two); the summary
    keeps its layout's variables (so networks stack), NaN where undefined, and says why."""
    rng = np.random.default_rng(18)
    v = counts(rng, same=False)
    full = m.summary(m.as_responses(v, labels=np.arange(10) % 2))
    v[:, 1:] = 0.0  # one active cell
    v[:, 0] = 1.0 + np.arange(v.shape[2])[None, :, None]  # tuned the same in every session
    out = m.summary(m.as_responses(v, labels=np.arange(10) % 2))
    assert set(out.data_vars) == set(full.data_vars)
    assert np.isnan(out.pv_correlation.values).all() and "pv_correlation: no pair" in out.attrs["skipped"]
    np.testing.assert_allclose(out.rate_correlation.values, 1.0)  # over cells: cell 0 against silent ones
    np.testing.assert_allclose(out.tuning_correlation.values, 1.0)  # cell 0 alone defines it


def test_identical_sessions_give_one():
    rng = np.random.default_rng(18)
    v = np.broadcast_to(counts(rng, S=1), (4, 60, 10, 6))
    r = m.as_responses(v)
    for metric in (m.pv_correlation, m.rate_correlation, m.tuning_correlation, m.rsa_stability):
        np.testing.assert_allclose(metric(r).values, 1.0, atol=1e-12, err_msg=metric.__name__)
    np.testing.assert_allclose(m.rsa_stability(r, normalise=False).values, 1.0, atol=1e-12)
    assert m.drift_geometry(r)["subspace_overlap"] == pytest.approx(1.0)
    np.testing.assert_allclose(m.drift_index(r).values, 0.0, atol=1e-12)


def test_independent_sessions_give_zero_within_sampling_error():
    rng = np.random.default_rng(19)
    S, C, X = 3, 400, 30
    r = m.as_responses(rng.normal(size=(S, C, X)))
    off = ~np.eye(S, dtype=bool)
    # per stimulus and pair a correlation over C cells: sd 1/√C, and the mean over X stimuli 1/√(CX)
    assert np.abs(m.pv_correlation(r, active_only=False).values[off]).max() < 4 / np.sqrt(C * X)
    assert np.abs(m.rate_correlation(r).values[off]).max() < 4 / np.sqrt(C)
    assert np.abs(m.tuning_correlation(r).values[off]).max() < 4 / np.sqrt(C * X)
    # the similarity entries of independent Gaussian vectors are nearly independent: n = X(X−1)/2 of them
    assert np.abs(m.rsa_stability(r).values[off]).max() < 4 / np.sqrt(X * (X - 1) / 2)


# --- bad input -----------------------------------------------------------------------------------------


def _good(R=4, X=6):
    rng = np.random.default_rng(20)
    return counts(rng, C=8, X=X, R=R, same=False) + 1.0


def _with(value, where):
    v = _good()
    v[where] = value
    return v


def _drop_time():
    return m.as_responses(_good()).drop_vars("time")


def _label_on_cells():
    return m.as_responses(_good()).assign_coords(label=("cell", np.arange(8)))


def _flat_stimulus():
    v = _good()
    v[1, :, 2] = 4.0
    return m.as_responses(v)


def _same_rates():
    v = _good()
    v[1] = v[1, :1]  # every cell responds as cell 0 in session 1
    return m.as_responses(v)


def _flat_tuning():
    v = _good()
    v[1] = np.arange(8)[:, None, None] + 1.0  # each cell's responses equal over stimuli in session 1
    return m.as_responses(v)


def _flat_even_trials():
    v = _good()
    v[0, :, :, 1::2] = 2.0
    return m.as_responses(v)


def _silent_session():
    v = _good()
    v[2, 1:] = 0.0
    return m.as_responses(v)


def _silent_cells():
    v = _good()
    v[:, 1:] = 0.0  # one active cell in every session
    return m.as_responses(v)


BAD = [
    ("NaN", lambda: m.as_responses(_with(np.nan, (1, 2, 3, 0))), ValueError, "NaN or infinite"),
    ("inf", lambda: m.pv_correlation(m.as_responses(_with(np.inf, (0, 0, 0, 0)))), ValueError, "NaN or infinite"),
    ("one session", lambda: m.as_responses(_good()[:1]), ValueError, "1 session"),
    ("one cell", lambda: m.as_responses(_good()[:, :1]), ValueError, "1 cell"),
    ("constant", lambda: m.as_responses(np.full((3, 4, 5), 2.0)), ValueError, "constant"),
    ("2-D array", lambda: m.as_responses(np.ones((3, 4))), ValueError, "shape"),
    ("missing dim", lambda: m.rate_correlation(xr.DataArray(np.ones((3, 4)), dims=("session", "cell"))),
     ValueError, "missing \\['stimulus'\\]"),
    ("unknown dim", lambda: m.check_responses(xr.DataArray(np.ones((2, 3, 4, 5)),
                                                           dims=("session", "cell", "stimulus", "network"))),
     ValueError, "unknown \\['network'\\]"),
    ("not labelled", lambda: m.pv_correlation(_good()), TypeError, "as_responses"),
    ("no time", lambda: m.similarity(_drop_time()), ValueError, "coordinate 'time'"),
    ("time not increasing", lambda: m.as_responses(_good(), time=[0, 2, 1, 3]), ValueError, "strictly increasing"),
    ("time length", lambda: m.as_responses(_good(), time=[0, 1]), ValueError, "time has shape"),
    ("labels length", lambda: m.as_responses(_good(), labels=[0, 1]), ValueError, "labels has shape"),
    ("labels on cells", lambda: m.check_responses(_label_on_cells()), ValueError, "along 'stimulus'"),
    ("decoder labels length", lambda: m.decoders(m.as_responses(_good()), labels=[0, 1, 0]),
     ValueError, "labels has shape"),
    ("decoder without labels", lambda: m.decoders(m.as_responses(_good())), ValueError, "need class labels"),
    ("decoder one class", lambda: m.decoders(m.as_responses(_good()), labels=np.zeros(6)), ValueError, "2 classes"),
    ("decoder folds", lambda: m.decoders(m.as_responses(_good(), labels=np.arange(6) % 2), cv_folds=1),
     ValueError, "cv_folds"),
    ("drift index, one trial", lambda: m.drift_index(m.as_responses(_good(R=1))), ValueError, "at least 2 trials"),
    ("drift index, no trials", lambda: m.drift_index(m.as_responses(_good()[..., 0])), ValueError, "no trial dim"),
    ("split half, one trial", lambda: m.rsa_stability(m.as_responses(_good(R=1))), ValueError, "at least 2 trials"),
    ("rsa, two stimuli", lambda: m.rsa_stability(m.as_responses(_good(X=2))), ValueError, "at least 3 stimuli"),
    ("tuning, one stimulus", lambda: m.tuning_correlation(m.as_responses(_good(X=1))), ValueError,
     "at least 2 stimuli"),
    ("groups need trials", lambda: m.participation_ratio(m.as_responses(_good()[..., 0]), 0), ValueError,
     "group='session'"),
    ("group name", lambda: m.drift_geometry(m.as_responses(_good()), group="cell"), ValueError, "group must be"),
    ("group without variance", lambda: m.participation_ratio(m.as_responses(np.repeat(_good(R=1), 3, -1)), 0),
     ValueError, "no variance"),
    ("session range", lambda: m.drift_geometry(m.as_responses(_good()), s1=4), ValueError, "out of range"),
    ("reduce", lambda: m.tuning_correlation(m.as_responses(_good()), reduce="mode"), ValueError, "reduce"),
    ("floor", lambda: m.drift_index(m.as_responses(_good()), floor=0), ValueError, "floor"),
    ("flat population vector", lambda: m.rsa_stability(_flat_stimulus()), ValueError, "stimulus 2 in session 1"),
    ("equal mean rates", lambda: m.rate_correlation(_same_rates()), ValueError, "same mean response in session 1"),
    ("no tuned cell", lambda: m.tuning_correlation(_flat_tuning()), ValueError, "no cell has a non-constant"),
    ("no reliable cell", lambda: m.drift_index(_flat_even_trials()), ValueError, "every cell"),
    ("no active pair", lambda: m.pv_correlation(_silent_cells()), ValueError, "no pair of sessions"),
    ("elapsed curve of a non-matrix", lambda: m.elapsed_curve(m.as_responses(_good())), ValueError,
     "'session_other'"),
]


@pytest.mark.parametrize("call, error, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gives_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_undefined_pv_pairs_are_nan_and_counted_not_fatal():
    """Small sparse recordings keep the pairs that are defined: a stimulus whose vector is constant over the
    kept cells is left out of that pair's mean, a pair with < 2 shared active cells is NaN."""
    flat = _flat_stimulus()  # stimulus 2 constant over cells in session 1
    S = flat.sizes["session"]
    per = m.pv_correlation(flat, per_stimulus=True)
    nan = np.isnan(per.values)
    assert nan[2, 1, :].all() and nan[2, :, 1].all() and nan.sum() == 2 * S - 1
    mean = m.pv_correlation(flat)
    assert np.isfinite(mean.values).all()
    assert mean.attrs["undefined"] == 2 * S - 1 and mean.attrs["pairs_undefined"] == 0
    pv = flat.mean("trial").values  # every cell active (responses >= 1)
    by_hand = np.mean([np.corrcoef(pv[1, :, x], pv[0, :, x])[0, 1] for x in range(pv.shape[2]) if x != 2])
    np.testing.assert_allclose(mean.values[1, 0], by_hand, rtol=1e-12)

    silent = m.pv_correlation(_silent_session())  # session 2: only cell 0 active
    nan = np.isnan(silent.values)
    assert nan[2].all() and nan[:, 2].all() and nan.sum() == 2 * S - 1
    assert silent.attrs["pairs_undefined"] == 2 * S - 1 and silent.attrs["cells_kept_min"] == 1

    sim = m.similarity(flat)
    nan = np.isnan(sim.values)
    assert nan[1, 2].all() and nan[1, :, 2].all() and nan.sum() == 2 * sim.sizes["stimulus"] - 1
    assert sim.attrs["stimuli_undefined"] == 1 and not nan[0].any()
