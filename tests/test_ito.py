"""Inference-time optimisation: matching, orthogonal matching and gradient pursuit recover planted
codes, respect positivity and the target L0, match a per-token loop and scikit-learn's OMP, and
handle the decoder bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.analysis.ito.pursuit import METHODS, gram, pursue


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
    assert bool((free.code < 0).any()) and torch.equal(free.l0, (free.code != 0).sum(-1))


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


@pytest.mark.parametrize("n_atoms", [48, 96, 128, 2048])
def test_the_blocked_argmax_is_torch_s(n_atoms):
    from attnviz.analysis.ito.pursuit import _argmax

    g = torch.Generator().manual_seed(4)
    score = torch.randn(37, n_atoms, generator=g)
    score[0] = 0.0  # all tied: both pick the first
    for signed, ref in ((False, score), (True, score.abs())):
        best, j = _argmax(score, signed)
        assert torch.equal(best, ref.max(-1).values)
        assert torch.equal(ref.gather(1, j[:, None])[:, 0], best) and int(j[0]) == 0


@pytest.mark.parametrize("method", METHODS)
def test_zero_inputs_and_more_atoms_than_dimensions(method):
    g = torch.Generator().manual_seed(22)  # a seed where a tiny pivot once gave codes of 3e6
    D = torch.randn(64, 8, generator=g)  # not normalised; L0 12 > d 8: the set goes singular
    zero = pursue(torch.zeros(5, 8), D, 4, method=method, positive=False, chunk=2)  # once raised
    assert torch.equal(zero.code, torch.zeros(5, 64)) and zero.steps == 0
    x = torch.randn(10, 8, generator=g)
    out = pursue(x, D, 12, method=method, positive=False)
    assert bool(torch.isfinite(out.code).all()) and float(out.code.abs().max()) < 1e3
    err = (x - out.reconstruction).pow(2).sum(-1) / x.pow(2).sum(-1)
    assert float(err.max()) < (1e-3 if method == "omp" else 0.5)


def gradient_pursuit_by_hand(x, D, target, positive):
    """One token, in the dictionary's own scale, as Blumensath & Davies (2008) write it: pick
    the atom of largest correlation over norm, step along the residual's correlations with the
    chosen atoms by the exact line search; with positivity, clip and drop atoms at zero."""
    x, D = x.double(), D.double()
    code, chosen = torch.zeros(D.shape[0], dtype=torch.float64), []
    for _ in range(target):
        corr = D @ (x - code @ D)
        score = corr / D.norm(dim=-1)
        j = int(score.argmax() if positive else score.abs().argmax())
        chosen += [] if j in chosen else [j]
        grad = torch.zeros_like(code)
        grad[chosen] = corr[chosen]
        code = code + grad.dot(grad) / (grad @ D).pow(2).sum() * grad
        if positive:
            code = code.clamp_min(0.0)
            chosen = [i for i in chosen if code[i] > 0]
    return code


@pytest.mark.parametrize("positive", [True, False])
def test_atoms_of_any_norm_give_the_unscaled_problem_s_codes(positive):
    """Pursuit works on atoms scaled to unit norm: MP's and OMP's codes only rescale with the
    atoms, and GP's steps are those of the problem as given."""
    g = torch.Generator().manual_seed(23)
    D = torch.nn.functional.normalize(torch.randn(96, 16, generator=g), dim=-1)
    norms = torch.rand(96, generator=g) * 3 + 0.2
    x = torch.randn(12, 16, generator=g)
    for method in ("mp", "omp"):
        unit = pursue(x, D, 6, method=method, positive=positive).code
        scaled = pursue(x, D * norms[:, None], 6, method=method, positive=positive).code
        assert torch.allclose(scaled * norms, unit, atol=1e-4)
    ours = pursue(x, D * norms[:, None], 6, method="gp", positive=positive).code
    by_hand = torch.stack([gradient_pursuit_by_hand(x[i], D * norms[:, None], 6, positive)
                           for i in range(len(x))])  # fmt: skip
    assert torch.allclose(ours.double(), by_hand, atol=1e-4)
    Dn = D * norms[:, None]  # a plain D D^T serves as well as gram(D); another matrix is refused
    plain = pursue(x, Dn, 6, method="gp", positive=positive, G=Dn @ Dn.T).code
    ours = pursue(x, Dn, 6, method="gp", positive=positive, G=gram(Dn)).code
    assert torch.allclose(plain, ours, atol=1e-5)
    with pytest.raises(ValueError, match="not this dictionary's Gram matrix"):
        pursue(x, Dn, 6, G=2 * torch.eye(96))


def test_omp_without_positivity_matches_scikit_learn():
    from sklearn.linear_model import orthogonal_mp

    g = torch.Generator().manual_seed(3)
    D = torch.nn.functional.normalize(torch.randn(96, 40, generator=g), dim=-1)
    x = torch.randn(30, 40, generator=g)
    ours = pursue(x, D, 6, method="omp", positive=False).code
    ref = orthogonal_mp(D.T.double().numpy(), x.T.double().numpy(), n_nonzero_coefs=6).T
    assert np.allclose(ours.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("positive", [True, False])
def test_early_stopping_on_atoms_of_any_norm(method, positive):
    D, code = planted(l0=2, positive=positive)
    out = pursue(code @ D, D, 10, method=method, positive=positive, tol=1e-5)
    assert out.steps == 2 and out.l0.max() == 2
    norms = torch.linspace(0.3, 4.0, D.shape[0])  # the same inputs from scaled atoms
    out = pursue(code @ D, D * norms[:, None], 10, method=method, positive=positive, tol=1e-5)
    assert out.steps == 2 and torch.allclose(out.code * norms, code, atol=1e-4)


def test_a_dead_atom_is_never_chosen_and_its_gram_matrix_is_accepted():
    g = torch.Generator().manual_seed(24)
    for D in (torch.randn(64, 16, generator=g),  # not normalised
              torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=-1)):  # fmt: skip
        D[5] = 0.0
        x = torch.randn(9, 16, generator=g)
        for method in METHODS:
            out = pursue(x, D, 8, method=method, positive=False, G=gram(D))
            assert bool(torch.isfinite(out.code).all()) and bool((out.code[:, 5] == 0).all())
            assert torch.allclose(out.code, pursue(x, D, 8, method=method, positive=False).code)


def test_early_stopping_and_bad_input():
    D, code = planted(l0=2)
    with pytest.raises(ValueError, match="choose one of"):
        pursue(code @ D, D, 3, method="lasso")
    with pytest.raises(ValueError, match="share d"):
        pursue(torch.zeros(3, 7), D, 3)


def basis_sae(spec, n_atoms=None, seed=0, signed=False):
    """A z SAE of layer 1 whose decoder is an orthonormal set of directions (with signed, each
    direction and its negative, so a non-negative code can still write anything) and whose
    encoder is its transpose."""
    from attnviz.dictionaries.sae import SAE, SAEConfig

    d_in = spec.n_heads * spec.d_head
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g))
    atoms = torch.cat([q, -q]) if signed else q[: n_atoms or d_in]
    sae = SAE(SAEConfig.for_model(spec, "z", 1, atoms.shape[0]), seed=seed)
    with torch.no_grad():
        sae.coder.W_dec.copy_(atoms)
        sae.coder.W_enc.copy_(atoms.T)
        sae.coder.b_out.zero_()
        sae.coder.b_enc.zero_()
    return sae


def test_the_fvu_pareto_puts_a_real_dictionary_above_a_random_one(tiny_llama_adapter):
    from attnviz.analysis.ito.compare import fvu_pareto

    sae = basis_sae(tiny_llama_adapter.spec, n_atoms=48)
    _, code = planted(n_tokens=80, n_atoms=48, d=64, l0=4, seed=5)
    x = code @ sae.W_dec.detach()
    frame = fvu_pareto({"planted": sae}, x, l0s=(1, 2, 4), methods=("topk", "mp", "gp"))
    assert set(frame.dictionary) == {"planted", "planted:random"}
    assert (frame.method == "encoder").sum() == 1
    gp = frame[(frame.dictionary == "planted") & (frame.method == "gp")].set_index("target_l0")
    assert gp.fvu.is_monotonic_decreasing and gp.loc[4, "fvu"] < 1e-6
    assert (gp.l0 <= gp.index).all()
    rnd = frame[(frame.dictionary == "planted:random") & (frame.method == "gp")].set_index(
        "target_l0"
    )
    assert (rnd.fvu > gp.fvu + 0.3).all()
    assert "topk" not in set(frame[frame.dictionary == "planted:random"].method)


def test_a_splice_of_an_exact_code_leaves_the_loss_as_it_was(tiny_llama_adapter):
    from attnviz.analysis.ito.compare import ce_pareto

    # +-64 orthonormal atoms spanning hook_z: a non-negative code of L0 64 is exact.
    sae = basis_sae(tiny_llama_adapter.spec, signed=True)
    tokens = tiny_llama_adapter.to_tokens(["When Mary and John went to the store, John gave a"] * 2)
    frame = ce_pareto(tiny_llama_adapter, sae, [tokens], l0s=(2, 64), methods=("gp",))
    exact = frame[(frame.method == "gp") & (frame.target_l0 == 64)].iloc[0]
    assert abs(exact.loss_increase) < 1e-4 and abs(exact.ce_recovered - 1) < 1e-3
    rough = frame[(frame.method == "gp") & (frame.target_l0 == 2)].iloc[0]
    assert rough.l0 <= 2 and abs(rough.loss_increase) > abs(exact.loss_increase)
    enc = frame[frame.method == "encoder"].iloc[0]
    assert abs(enc.loss_increase) < 1e-4  # the encoder of an orthonormal basis is exact too


def test_agreement_of_ito_with_the_encoder():
    from attnviz.analysis.ito.compare import agreement
    from attnviz.dictionaries.sae import SAE, SAEConfig

    cfg = SAEConfig(
        architecture="standard", model="toy", site="resid_pre", layers=[0], d_in=64, d_sae=48
    )
    sae = SAE(cfg)
    D, code = planted(n_tokens=60, n_atoms=48, d=64, l0=4, seed=6)
    with torch.no_grad():
        sae.coder.W_dec.copy_(D)
        sae.coder.W_enc.copy_(D.T)
        sae.coder.b_out.zero_()
        sae.coder.b_enc.zero_()
    out = agreement(sae, code @ D, l0=4, eps=1e-5)
    assert out["jaccard"] > 0.999 and out["corr"] > 0.999  # exact encoder and exact pursuit agree
    noisy = agreement(
        sae, code @ D + 0.3 * torch.randn(60, 64, generator=torch.Generator().manual_seed(0)), l0=4
    )
    assert noisy["jaccard"] < out["jaccard"] and noisy["pairs"] > out["pairs"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("positive", [True, False])
def test_adaptive_l0_stops_each_token_on_its_own_and_matches_a_per_token_loop(method, positive):
    """With an absolute tolerance tokens stop at different steps: the stopped ones are packed
    away, the slots widen past their first 32, and past d / 8 atoms the correlations come from
    the residual; none of it may change any token's code."""
    g = torch.Generator().manual_seed(31)
    D = torch.randn(192, 48, generator=g) * (0.5 + torch.rand(192, 1, generator=g))
    scale = torch.logspace(-1.5, 1, 40)[:, None]  # small inputs stop early, large ones run on
    x = torch.randn(40, 48, generator=g) * scale
    atol = 0.02
    out = pursue(x, D, 40, method=method, positive=positive, atol=atol)
    single = [pursue(x[i : i + 1], D, 40, method=method, positive=positive, atol=atol)
              for i in range(40)]  # fmt: skip
    assert torch.allclose(out.code, torch.cat([s.code for s in single]), atol=1e-4)
    assert out.l0.tolist() == [int(s.l0) for s in single]
    assert len(set(out.l0.tolist())) > 5
    if method == "omp" and not positive:  # a new atom every step: below 40, it stopped at atol
        residual = (x - out.reconstruction).pow(2).sum(-1)
        stopped = out.l0 < 40
        assert bool(stopped.any()) and bool((residual[stopped] <= atol * 1.001).all())
    assert out.steps > 32  # the slots were widened


def test_atol_for_mean_l0_hits_its_mean_and_spends_atoms_where_the_residual_is():
    from attnviz.analysis.ito.pursuit import atol_for_mean_l0

    g = torch.Generator().manual_seed(32)
    D = torch.nn.functional.normalize(torch.randn(128, 24, generator=g), dim=-1)
    x = torch.randn(200, 24, generator=g) * torch.logspace(-1, 0.5, 200)[:, None]
    atol = atol_for_mean_l0(x, D, 6, max_l0=24)
    adaptive = pursue(x, D, 24, atol=atol)
    fixed = pursue(x, D, 6)
    assert 5.5 <= float(adaptive.l0.float().mean()) <= 6.0
    err = lambda out: float((x - out.reconstruction).pow(2).sum())  # noqa: E731
    assert err(adaptive) < err(fixed)  # the same atoms on average, a smaller total residual
    assert int(adaptive.l0[-20:].float().mean()) > int(adaptive.l0[:20].float().mean())
    with pytest.raises(ValueError, match="mean_l0"):
        atol_for_mean_l0(x, D, 30, max_l0=24)
    with pytest.raises(ValueError, match="atol"):
        pursue(x, D, 4, atol=-1.0)
