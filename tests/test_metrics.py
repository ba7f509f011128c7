"""attnviz.analysis.metrics: every formula against a hand computation, on small hand-built
tensors (no model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attnviz.analysis.metrics import (
    DECADE_EDGES,
    FiringCounts,
    VarianceExplained,
    ce_recovered,
    density_histogram,
    density_table,
    feature_density,
    fvu,
    kl_rows,
    kl_summary,
    l0,
    live_features,
    mean_row_kl,
    recovered_fraction,
    variance_explained,
)
from attnviz.analysis.patterns import causal_mask


def random_pattern(b: int, h: int, n: int, seed: int = 0, sharpness: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, h, n, n, generator=g) * sharpness
    return scores.masked_fill(~causal_mask(n), float("-inf")).softmax(-1)


# ---- KL ----------------------------------------------------------------------------------------


def test_kl_is_zero_for_a_perfect_reconstruction_and_positive_otherwise():
    true = random_pattern(2, 3, 7, seed=0)
    other = random_pattern(2, 3, 7, seed=1)
    assert torch.equal(kl_rows(true, true.clone()), torch.zeros(2, 3, 7))
    kl = kl_rows(true, other)
    assert kl.shape == (2, 3, 7)
    assert torch.all(kl[..., 0] == 0)  # the first row is [1, 0, ...] in both
    assert torch.all(kl[..., 1:] > 0)
    # Against the definition, row by row.
    p, q = true[1, 2, 5, :6].double(), other[1, 2, 5, :6].double()
    assert kl[1, 2, 5].item() == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-5)


def test_kl_of_rows_with_masked_zeros_is_finite_and_right():
    true = torch.tensor([[[[0.5, 0.5, 0.0]]]])
    recon = torch.tensor([[[[0.25, 0.25, 0.5]]]])  # mass where the truth has none
    assert kl_rows(true, recon).item() == pytest.approx(math.log(2), rel=1e-6)
    underflow = torch.tensor([[[[1.0, 0.0, 0.0]]]])  # recon gives the true source nothing
    value = kl_rows(torch.tensor([[[[0.5, 0.5, 0.0]]]]), underflow)
    assert torch.isfinite(value).all() and value.item() > 10
    # float16 patterns with zeros.
    half = random_pattern(1, 2, 5).half()
    assert torch.isfinite(kl_rows(half, random_pattern(1, 2, 5, seed=4).half())).all()
    with pytest.raises(ValueError, match="differ in shape"):
        kl_rows(true, recon[..., :2])


def test_kl_summary_per_head():
    kl = torch.stack([torch.arange(100.0), torch.zeros(100)])[None]  # [1, 2, 100]
    frame = kl_summary(kl, layer=3)
    assert list(frame.columns) == ["layer", "head", "mean", "p90", "p99", "max"]
    row = frame.iloc[0]
    assert row["mean"] == pytest.approx(49.5)
    assert row["p90"] == pytest.approx(np.quantile(np.arange(100.0), 0.9))
    assert row["p99"] == pytest.approx(98.01)
    assert row["max"] == 99
    assert frame.iloc[1][["mean", "p99", "max"]].tolist() == [0, 0, 0]
    # [heads, rows] gives the same.
    assert kl_summary(kl[0]).equals(kl_summary(kl))


def test_kl_in_log_space_matches_probabilities_and_masked_entries_add_zero():
    true = random_pattern(2, 3, 6, seed=2)
    recon = random_pattern(2, 3, 6, seed=3)
    logp, logq = true.log(), recon.log()  # -inf above the diagonal in both
    assert torch.isinf(logp).any()
    from_logs = kl_rows(logp, logq, log=True)
    assert torch.isfinite(from_logs).all()
    torch.testing.assert_close(from_logs, kl_rows(true, recon), atol=1e-6, rtol=1e-5)
    # By hand for one row of 3 allowed sources: Σ p (log p - log q).
    p, q = true[0, 1, 2, :3].double(), recon[0, 1, 2, :3].double()
    assert from_logs[0, 1, 2].item() == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-5)
    # Whatever the reconstruction holds on a masked source, it adds exactly 0.
    junk = logq.clone()
    junk[..., 0, 1:] = 5.0
    assert torch.equal(kl_rows(logp, junk, log=True)[..., 0], torch.zeros(2, 3))
    # Differentiable in log space (what training needs), with finite gradients.
    logq_var = logq.clone().requires_grad_()
    kl_rows(logp, logq_var, log=True).sum().backward()
    assert logq_var.grad is not None and torch.isfinite(logq_var.grad).all()


def test_mean_row_kl_leaves_out_row_zero():
    true = random_pattern(1, 2, 5, seed=5)[0]  # [heads, dest, src]
    recon = random_pattern(1, 2, 5, seed=6)[0]
    rows = kl_rows(true, recon)  # [heads, dest]
    torch.testing.assert_close(mean_row_kl(true, recon), rows[:, 1:].sum(-1) / 4)
    assert mean_row_kl(true, recon).shape == (2,)
    # The training loss: the mean over every row 1.. of every head and context.
    batch_true, batch_recon = random_pattern(3, 2, 5, seed=7), random_pattern(3, 2, 5, seed=8)
    loss = mean_row_kl(batch_true.log(), batch_recon.log(), log=True).mean()
    want = kl_rows(batch_true, batch_recon)[..., 1:].mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(mean_row_kl(true[:, :1, :1], recon[:, :1, :1]), torch.zeros(2))


# ---- sparsity ------------------------------------------------------------------------------------


def test_l0_density_live_and_density_table():
    f = torch.tensor(
        [
            [1.0, 0.0, 0.0, 2.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 0.0],
            [3.0, 0.0, 1.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    assert l0(f) == pytest.approx(6 / 4)
    assert l0(f.reshape(2, 2, 5)) == pytest.approx(6 / 4)
    density = feature_density(f)
    assert density.tolist() == [1.0, 0.0, 0.25, 0.25, 0.0]
    assert torch.equal(feature_density([f[:1], f[1:]]), density)
    assert live_features(density) == 3

    hist = density_table(density, bins=2)
    assert list(hist.columns) == ["bin", "log10_lo", "log10_hi", "count", "dead"]
    assert hist.iloc[0]["bin"] == "dead" and hist.iloc[0]["count"] == 2
    assert hist["count"].sum() == 5
    # log10 densities are -0.602 (twice) and 0; default range [-1, 0] in two bins.
    assert hist.iloc[1:]["count"].tolist() == [2, 1]
    fixed = density_table(density, bins=[-0.5, -0.25, 0.0])  # -0.602 is clipped into bin 1
    assert fixed.iloc[1:]["count"].tolist() == [2, 1]
    with pytest.raises(ValueError, match="increasing"):
        density_table(density, bins=[0.0, -1.0])


def test_firing_counts_stream_l0_and_density():
    f = torch.tensor([[0.0, 1.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    counter = FiringCounts().add(f[:1]).add(f[1:])
    assert counter.n_tokens == 3
    assert counter.l0() == pytest.approx(3 / 3)
    assert counter.density().tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert l0(f) == counter.l0()
    with pytest.raises(ValueError, match="at least one token"):
        FiringCounts().density()


def test_density_histogram_is_the_trainers_per_decade_dict():
    # log10 densities: -9 (below the range: first bin), -7.5, -3, -3 (a left edge), -0.5, 0, and
    # two dead features.
    density = torch.tensor([1e-9, 10**-7.5, 1e-3, 1e-3, 10**-0.5, 1.0, 0.0, 0.0])
    hist = density_histogram(density)
    assert hist == {
        "log10_edges": DECADE_EDGES,
        "counts": [2, 0, 0, 0, 0, 2, 0, 2],
        "never_fired": 2,
    }
    assert hist["log10_edges"] == [-8, -7, -6, -5, -4, -3, -2, -1, 0]
    assert sum(hist["counts"]) + hist["never_fired"] == density.numel()
    json.dumps(hist)  # plain ints and lists, as the trainer writes them to history.jsonl
    # The same bins as the report's table with the same edges.
    table = density_table(density, bins=DECADE_EDGES)
    assert table["count"].tolist() == [2, *hist["counts"]]


# ---- variance explained ----------------------------------------------------------------------


def test_variance_explained():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4, 10, 2, 3, generator=g) + 5.0
    assert variance_explained(true, true.clone()) == pytest.approx(1.0)
    mean = true.reshape(-1, 2, 3).mean(0).expand_as(true)
    assert variance_explained(true, mean) == pytest.approx(0.0, abs=1e-12)
    noisy = true + 0.5 * torch.randn(true.shape, generator=g)
    t, r = true.double().reshape(-1, 6), noisy.double().reshape(-1, 6)
    expected = 1 - ((t - r) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
    assert variance_explained(true, noisy) == pytest.approx(float(expected))
    assert variance_explained(true.reshape(40, 6), noisy.reshape(40, 6), vector_ndim=1) == (
        pytest.approx(float(expected))
    )
    acc = VarianceExplained()
    acc.add(true[:1], noisy[:1])
    acc.add(true[1:], noisy[1:])
    assert acc.value() == pytest.approx(float(expected), rel=1e-9)
    with pytest.raises(ValueError, match="vector_ndim=1"):
        variance_explained(true.reshape(40, 6), noisy.reshape(40, 6))


def test_fvu_is_relative_to_the_mean_not_to_zero():
    # Two tokens of one coordinate, far from zero: x = [10, 12], mean 11.
    true = torch.tensor([[10.0], [12.0]])
    recon = torch.tensor([[10.5], [11.5]])
    # Σ (x - x̂)² = 0.5; Σ (x - mean)² = 2; relative to zero it would be 0.5 / 244.
    assert fvu(true, recon, vector_ndim=1) == pytest.approx(0.25)
    assert variance_explained(true, recon, vector_ndim=1) == pytest.approx(0.75)
    # Predicting the mean explains nothing, though it is close to x relative to zero.
    assert fvu(true, torch.full_like(true, 11.0), vector_ndim=1) == pytest.approx(1.0)
    assert math.isnan(fvu(torch.ones(3, 2), torch.zeros(3, 2), vector_ndim=1))
    # The streaming form merges batches with different means exactly.
    acc = VarianceExplained(vector_ndim=1).add(true[:1], recon[:1]).add(true[1:], recon[1:])
    assert acc.fvu() == pytest.approx(0.25)


# ---- CE recovered -----------------------------------------------------------------------------


def synthetic_losses(n: int, damage: float = 1.0, increase: float = 0.2, seed: int = 0):
    """Per-context losses with known population means: clean ~ 3 + noise, patched = clean +
    `increase` + noise, ablated = clean + `damage` + noise."""
    g = torch.Generator().manual_seed(seed)
    clean = 3.0 + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    patched = clean + increase + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    ablated = clean + damage + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return clean, patched, ablated


def test_ce_recovered_figures_by_hand():
    clean = torch.tensor([2.0, 3.0])
    patched = torch.tensor([2.5, 3.5])
    ablated = torch.tensor([4.0, 5.0])
    r = ce_recovered(clean, patched, ablated, n_resamples=200)
    assert (r.clean, r.patched, r.ablated) == (2.5, 3.0, 4.5)
    assert r.ratio == pytest.approx((4.5 - 3.0) / (4.5 - 2.5))
    assert r.ratio == pytest.approx(recovered_fraction(2.5, 3.0, 4.5))
    assert r.loss_increase == pytest.approx(0.5) and r.ablation_damage == pytest.approx(2.0)
    # Every context has the same differences, so every resample agrees.
    assert r.loss_increase_interval == pytest.approx((0.5, 0.5))
    assert r.ratio_interval == pytest.approx((0.75, 0.75))
    assert r.warning is None and not r.unreliable
    # Weighted by predicted tokens: the mean per token, not per context.
    w = ce_recovered(clean, patched, ablated, tokens=torch.tensor([3.0, 1.0]), n_resamples=10)
    assert w.clean == pytest.approx((3 * 2.0 + 3.0) / 4)
    d = r.to_dict()
    assert d["ratio_interval"] == pytest.approx([0.75, 0.75]) and d["unreliable"] is False
    json.dumps(d)
    with pytest.raises(ValueError, match="different contexts"):
        ce_recovered(clean, patched[:1], ablated)


def test_ce_recovered_interval_contains_the_truth_and_narrows_with_more_contexts():
    small = ce_recovered(*synthetic_losses(25, seed=1))
    large = ce_recovered(*synthetic_losses(400, seed=2))
    for r in (small, large):
        lo, hi = r.loss_increase_interval
        assert lo < 0.2 < hi  # the true loss increase
        lo, hi = r.ratio_interval
        assert lo < 0.8 < hi  # the true ratio (1.0 - 0.2) / 1.0
        lo, hi = r.ablation_damage_interval
        assert lo < 1.0 < hi
        assert r.n_resamples == 1000 and r.confidence == 0.95

    def width(iv):
        return iv[1] - iv[0]

    # 16x the contexts: about a quarter of the width.
    assert width(large.loss_increase_interval) < 0.5 * width(small.loss_increase_interval)
    assert width(large.ratio_interval) < 0.5 * width(small.ratio_interval)
    assert large.warning is None


def test_ce_recovered_is_reproducible_for_a_seed():
    losses = synthetic_losses(30, seed=4)
    assert ce_recovered(*losses, seed=7) == ce_recovered(*losses, seed=7)
    assert (
        ce_recovered(*losses, seed=7).ratio_interval != ce_recovered(*losses, seed=8).ratio_interval
    )


def test_ce_recovered_warns_when_the_ablation_does_little_damage():
    # The layer-15 situation: the ablation costs ~0.04 nats/token, the ratio swings.
    tiny = ce_recovered(*synthetic_losses(32, damage=0.038, increase=0.01, seed=5))
    assert tiny.unreliable
    assert "0.05" in tiny.warning and "loss_increase" in tiny.warning
    assert math.isfinite(tiny.loss_increase)
    # Damage below noise: its interval reaches 0 and the ratio's interval is wide.
    noise = ce_recovered(*synthetic_losses(32, damage=0.0, increase=0.01, seed=6))
    assert noise.ablation_damage_interval[0] <= 0 and "interval" in noise.warning
    # Large damage: no warning.
    large = ce_recovered(*synthetic_losses(32, damage=2.0, increase=0.3, seed=5))
    assert large.warning is None
    # A single context has no interval.
    one = ce_recovered([3.0], [3.2], [5.0])
    assert one.ratio == pytest.approx(0.9) and "one context" in one.warning


def test_recovered_fraction_formula_and_undefined_case():
    assert recovered_fraction(clean=2.0, patched=2.5, ablated=4.0) == pytest.approx(0.75)
    assert recovered_fraction(clean=2.0, patched=5.0, ablated=4.0) == pytest.approx(-0.5)
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert math.isnan(recovered_fraction(clean=2.0, patched=2.5, ablated=2.0 + 1e-8))
