"""Inference-time optimisation: matching, orthogonal matching and gradient pursuit recover planted
codes, respect positivity and the target L0, match a per-token loop and scikit-learn's OMP, and
handle the decoder bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.analysis.ito.pursuit import METHODS, pursue


def planted(n_tokens=64, n_atoms=48, d=64, l0=5, seed=0, positive=True):
    """Orthonormal atoms (rows of a random orthogonal matrix) and codes with l0 non-zeros."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    D = q[:n_atoms]
    code = torch.zeros(n_tokens, n_atoms)
    for i in range(n_tokens):
        idx = torch.randperm(n_atoms, generator=g)[:l0]
        v = torch.rand(l0, generator=g) + 0.5
        code[i, idx] = v if positive else v * torch.sign(torch.randn(l0, generator=g))
    return D, code


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("positive", [True, False])
def test_planted_codes_are_recovered_exactly(method, positive):
    D, code = planted(positive=positive)
    bias = torch.linspace(-1, 1, D.shape[1])
    out = pursue(code @ D + bias, D, 5, method=method, positive=positive, bias=bias)
    assert torch.allclose(out.code, code, atol=1e-4)
    assert torch.allclose(out.reconstruction, code @ D + bias, atol=1e-4)
    assert out.l0.tolist() == [5] * code.shape[0]


@pytest.mark.parametrize("method", METHODS)
def test_positivity_and_the_target_l0_hold_on_a_hard_dictionary(method):
    g = torch.Generator().manual_seed(1)
    D = torch.randn(256, 32, generator=g)  # overcomplete, not normalised
    x = torch.randn(100, 32, generator=g)
    out = pursue(x, D, 12, method=method, positive=True)
    assert bool((out.code >= 0).all())
    assert int(out.l0.max()) <= 12 and torch.equal(out.l0, (out.code != 0).sum(-1))
    err = (x - out.reconstruction).pow(2).sum(-1)
    assert bool((err <= x.pow(2).sum(-1) + 1e-4).all())  # never worse than nothing
    free = pursue(x, D, 12, method=method, positive=False)
    assert bool((free.code < 0).any())


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_a_per_token_loop_and_chunking_changes_nothing(method):
    g = torch.Generator().manual_seed(2)
    D = torch.nn.functional.normalize(torch.randn(128, 24, generator=g), dim=-1)
    x = torch.randn(20, 24, generator=g)
    batched = pursue(x, D, 8, method=method)
    single = torch.cat([pursue(x[i : i + 1], D, 8, method=method).code for i in range(20)])
    chunked = pursue(x, D, 8, method=method, chunk=3)
    assert torch.allclose(batched.code, single, atol=1e-5)
    assert torch.allclose(batched.code, chunked.code, atol=1e-5)


def test_omp_without_positivity_matches_scikit_learn():
    from sklearn.linear_model import orthogonal_mp

    g = torch.Generator().manual_seed(3)
    D = torch.nn.functional.normalize(torch.randn(96, 40, generator=g), dim=-1)
    x = torch.randn(30, 40, generator=g)
    ours = pursue(x, D, 6, method="omp", positive=False).code
    ref = orthogonal_mp(D.T.double().numpy(), x.T.double().numpy(), n_nonzero_coefs=6).T
    assert np.allclose(ours.numpy(), ref, atol=1e-4)


def test_early_stopping_and_bad_input():
    D, code = planted(l0=2)
    out = pursue(code @ D, D, 10, method="gp", tol=1e-5)
    assert out.steps == 2 and out.l0.max() == 2
    with pytest.raises(ValueError, match="choose one of"):
        pursue(code @ D, D, 3, method="lasso")
    with pytest.raises(ValueError, match="share d"):
        pursue(torch.zeros(3, 7), D, 3)
