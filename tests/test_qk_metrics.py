"""QK dictionary quality metrics: pure functions on hand-built tensors, and the model-running ones
on a tiny random Llama (rotary, GQA) whose attention is sharpened so that patterns matter."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from attnviz.analysis import qk_metrics
from attnviz.analysis.feature_examples import max_activating_examples
from attnviz.analysis.metrics import (
    ce_recovered,
    feature_density,
    kl_rows,
    l0,
    live_features,
    recovered_fraction,
    variance_explained,
)
from attnviz.analysis.patterns import causal_mask
from attnviz.analysis.qk_metrics import (
    PatternMean,
    mean_pattern,
    patched_losses,
    uniform_causal_pattern,
)
from attnviz.analysis.qk_report import QKReport, evaluate_qk
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKConfig, QKDictionary
from attnviz.models import ReplacePattern

LAYER = 1


def random_pattern(b: int, h: int, n: int, seed: int = 0, sharpness: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, h, n, n, generator=g) * sharpness
    return scores.masked_fill(~causal_mask(n), float("-inf")).softmax(-1)


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_tokenizer):
    """The tiny Llama with q/k scaled up (sharp patterns) and v/o/unembedding scaled up (attention
    moves the loss), so ablations do measurable damage."""
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from tests.tiny_models import tiny_llama

    model = tiny_llama(seed=0)
    with torch.no_grad():
        for block in model.model.layers:
            attn = block.self_attn
            attn.q_proj.weight.mul_(8)
            attn.k_proj.weight.mul_(8)
            attn.v_proj.weight.mul_(10)
            attn.o_proj.weight.mul_(10)
        model.lm_head.weight.mul_(20)
    return NNsightAdapter(model, tiny_tokenizer, "tiny-llama", bos_token_id=0)


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, 49152, (3, 12), generator=g) for _ in range(2)]


@pytest.fixture(scope="module")
def random_qk(adapter):
    return QKDictionary(QKConfig.for_model(adapter.spec, layer=LAYER, d_hidden_q=64), seed=5)


def exact_transcoder(adapter) -> QKDictionary:
    """A transcoder with f = [relu(x), relu(-x)] and decoders [W; -W] + b: q_hat = x W_Q + b_Q = q."""
    s = adapter.spec
    w = adapter.qk_weights(LAYER)
    qk = QKDictionary(QKConfig.for_model(s, layer=LAYER, d_hidden_q=2 * s.d_model))
    eye = torch.eye(s.d_model)
    with torch.no_grad():
        for coder, W, b in ((qk.query, w.W_Q, w.b_Q), (qk.key, w.W_K, w.b_K)):
            flat = W.permute(1, 0, 2).reshape(s.d_model, -1).float()
            coder.W_enc.copy_(torch.cat([eye, -eye], 1))
            coder.b_enc.zero_()
            coder.b_pre.zero_()
            coder.W_dec.copy_(torch.cat([flat, -flat], 0))
            coder.b_out.copy_(b.reshape(-1).float())
    return qk


def exact_sae(adapter) -> QKDictionary:
    """A q/k SAE with identity-like weights: f = [relu(x), relu(-x)], decoders [I; -I]."""
    s = adapter.spec
    d_q, d_k = s.n_heads * s.d_head, s.n_kv_heads * s.d_head
    qk = QKDictionary(
        QKConfig.for_model(s, LAYER, d_hidden_q=2 * d_q, d_hidden_k=2 * d_k, architecture="qk_sae")
    )
    with torch.no_grad():
        for coder, d in ((qk.query, d_q), (qk.key, d_k)):
            eye = torch.eye(d)
            coder.W_enc.copy_(torch.cat([eye, -eye], 1))
            coder.W_dec.copy_(torch.cat([eye, -eye], 0))
            for p in (coder.b_enc, coder.b_pre, coder.b_out):
                p.zero_()
    return qk


# ---- ablation patterns -----------------------------------------------------------------------


def test_uniform_causal_pattern():
    u = uniform_causal_pattern(2, 3, 5)
    assert u.shape == (2, 3, 5, 5)
    assert torch.allclose(u.sum(-1), torch.ones(2, 3, 5))
    assert torch.all(u[..., ~causal_mask(5)] == 0)
    assert u[0, 0, 3, 0].item() == pytest.approx(0.25)


def test_mean_pattern_averages_contexts_and_stays_normalised():
    a, b = random_pattern(3, 2, 6, seed=0), random_pattern(5, 2, 6, seed=1)
    expected = torch.cat([a, b]).double().mean(0).float()
    assert torch.allclose(mean_pattern([a, b]), expected, atol=1e-7)
    assert torch.allclose(mean_pattern(torch.cat([a, b])), expected, atol=1e-7)
    m = mean_pattern([a, b])
    assert m.shape == (2, 6, 6)
    assert torch.allclose(m.sum(-1), torch.ones(2, 6), atol=1e-6)
    acc = PatternMean()
    acc.add(a)
    with pytest.raises(ValueError, match="one length"):
        acc.add(random_pattern(1, 2, 7))


# ---- losses --------------------------------------------------------------------------------------


def test_patched_losses(adapter, batches):
    tokens = batches[0]
    b, n = tokens.shape
    heads = adapter.spec.n_heads
    true = adapter.attention(tokens, LAYER, ("pattern",)).pattern
    out = patched_losses(
        adapter, tokens, LAYER, {"true": true, "uniform": uniform_causal_pattern(b, heads, n)}
    )
    assert out["n_predictions"] == b * (n - 1)
    ce, kl = out["ce"], out["logit_kl"]
    assert ce["clean"] == pytest.approx(float(adapter.loss(tokens).mean()), abs=1e-5)
    assert ce["true"] == pytest.approx(ce["clean"], abs=1e-4)
    assert kl["true"] == pytest.approx(0.0, abs=1e-5)
    assert abs(ce["uniform"] - ce["clean"]) > 0.05
    assert kl["uniform"] > 1e-3
    # Matches patching by hand.
    by_hand = adapter.loss(
        tokens, [ReplacePattern(LAYER, range(heads), uniform_causal_pattern(b, heads, n))]
    )
    assert ce["uniform"] == pytest.approx(float(by_hand.mean()), abs=1e-5)
    # One [heads, n, n] pattern is used for every context.
    single = patched_losses(adapter, tokens, LAYER, {"u": uniform_causal_pattern(1, heads, n)[0]})
    assert single["ce"]["u"] == pytest.approx(ce["uniform"], abs=1e-5)

    # A few contexts at a time (memory) gives what all at once gives.
    one_context = n * adapter.spec.d_vocab * 4
    assert qk_metrics.contexts_at_once(n, adapter.spec.d_vocab, "cpu") >= b
    assert qk_metrics.contexts_at_once(10**6, 10**6, "cpu") == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(qk_metrics.LOGITS_BYTES_AT_ONCE, "cpu", 2 * one_context)
        assert qk_metrics.contexts_at_once(n, adapter.spec.d_vocab, "cpu") == 2 < b
        chunked = patched_losses(
            adapter, tokens, LAYER, {"true": true, "uniform": uniform_causal_pattern(b, heads, n)}
        )
    for name in ("clean", "true", "uniform"):
        torch.testing.assert_close(chunked["ce_per_context"][name], out["ce_per_context"][name])
    assert chunked["logit_kl"]["uniform"] == pytest.approx(kl["uniform"], rel=1e-5)

    assert recovered_fraction(ce["clean"], ce["true"], ce["uniform"]) == pytest.approx(
        1.0, abs=1e-3
    )
    assert recovered_fraction(ce["clean"], ce["uniform"], ce["uniform"]) == 0.0
    with pytest.raises(ValueError, match="expected"):
        patched_losses(adapter, tokens, LAYER, {"bad": true[:, :2]})
    with pytest.raises(ValueError, match="clean"):
        patched_losses(adapter, tokens, LAYER, {"clean": true})


# ---- max activating examples -----------------------------------------------------------------


def brute_force_activations(adapter, qk, side, batches):
    rows = []
    for tokens in batches:
        acts = adapter.attention(tokens, LAYER, ("resid_normed", "q", "k"))
        with torch.no_grad():
            f_q, f_k = qk.encode(acts.resid_normed, acts.q, acts.k)
        rows.append(f_q if side == "q" else f_k)
    return torch.cat(rows)  # [contexts, n, d_hidden]


@pytest.mark.parametrize(("architecture", "side"), [("qk_transcoder", "q"), ("qk_sae", "k")])
def test_max_activating_examples_match_brute_force(adapter, batches, architecture, side):
    spec = adapter.spec
    qk = QKDictionary(
        QKConfig.for_model(spec, layer=LAYER, d_hidden_q=32, architecture=architecture), seed=2
    )
    every = brute_force_activations(adapter, qk, side, batches)
    n = every.shape[1]
    feature = int((every > 0).reshape(-1, every.shape[-1]).sum(0).argmax())
    column = every[..., feature].reshape(-1)
    k, window = 5, 3
    top = column.topk(k)

    frame = max_activating_examples(adapter, qk, feature, side, batches, k=k, window=window)
    assert list(frame.columns) == [
        "rank", "context", "position", "activation", "token", "before", "after",
    ]  # fmt: skip
    assert frame["rank"].tolist() == list(range(k))
    assert frame["context"].tolist() == (top.indices // n).tolist()
    assert frame["position"].tolist() == (top.indices % n).tolist()
    assert np.allclose(frame["activation"].to_numpy(), top.values.numpy(), atol=1e-5)

    all_tokens = torch.cat(batches)
    for _, row in frame.iterrows():
        ctx, pos = row["context"], row["position"]
        words = adapter.to_str_tokens(all_tokens[ctx])
        assert row["token"] == words[pos]
        lo, hi = max(0, pos - window), min(n, pos + window + 1)
        assert [w for w, _ in row["before"]] == words[lo:pos]
        assert [w for w, _ in row["after"]] == words[pos + 1 : hi]
        acts = every[ctx, :, feature]
        assert np.allclose([a for _, a in row["before"]], acts[lo:pos].numpy(), atol=1e-5)
        assert np.allclose([a for _, a in row["after"]], acts[pos + 1 : hi].numpy(), atol=1e-5)


def test_max_activating_examples_lists_only_firing_positions(adapter, batches, random_qk):
    with torch.no_grad():
        random_qk.query.b_enc[7] = -1e6  # never fires
    try:
        frame = max_activating_examples(adapter, random_qk, 7, "q", batches, k=4)
    finally:
        with torch.no_grad():
            random_qk.query.b_enc[7] = 0.0
    assert len(frame) == 0
    with pytest.raises(ValueError, match="side"):
        max_activating_examples(adapter, random_qk, 0, "v", batches)
    with pytest.raises(ValueError, match="out of range"):
        max_activating_examples(adapter, random_qk, 64, "k", batches)


# ---- evaluate_qk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [exact_transcoder, exact_sae], ids=["transcoder", "sae"])
def test_evaluate_qk_on_an_exact_dictionary(adapter, batches, build):
    qk = build(adapter)
    pairs = PairTable.full(qk.cfg.d_hidden_q, qk.cfg.d_hidden_k, adapter.spec.n_heads)
    report = evaluate_qk(adapter, qk, batches, pairs=pairs)
    assert isinstance(report, QKReport)
    m = report.per_layer
    n_contexts = sum(b.shape[0] for b in batches)
    assert m["n_contexts"] == n_contexts
    assert m["n_tokens"] == sum(b.numel() for b in batches)
    assert m["n_predictions"] == n_contexts * (batches[0].shape[1] - 1)

    assert m["var_explained_q"] == pytest.approx(1.0, abs=1e-6)
    assert m["var_explained_k"] == pytest.approx(1.0, abs=1e-6)
    assert m["kl_mean"] < 1e-5 and m["kl_max"] < 1e-4
    assert m["ce_recon"] == pytest.approx(m["ce_clean"], abs=1e-4)
    assert m["logit_kl_recon"] < 1e-5
    assert m["ce_recovered_uniform"] == pytest.approx(1.0, abs=1e-3)
    assert m["ce_recovered_mean"] == pytest.approx(1.0, abs=1e-2)
    assert abs(m["ce_uniform"] - m["ce_clean"]) > 0.01
    # Every coordinate of the input is non-zero, so exactly one of its two features fires.
    d_in = qk.cfg.d_hidden_q // 2
    assert m["l0_q"] == d_in and m["l0_k"] == qk.cfg.d_hidden_k // 2
    assert m["live_q"] == qk.cfg.d_hidden_q  # every coordinate takes both signs
    # With every pair kept the masked map is the transcoder pattern itself, so every masked
    # number is the same (on this rotary model only if the rotary tables reached it), up to the
    # rounding of the sparse engine's other summation order.
    assert m["masked_kl_mean"] == pytest.approx(m["kl_mean"], abs=1e-6)
    assert m["ce_masked"] == pytest.approx(m["ce_recon"], abs=1e-6)
    assert m["pairs_kept"] == pairs.nnz and m["pairs_fraction_masked"] == 0.0
    # The bias terms alone are far from it, and the pairs close the whole gap.
    assert m["bias_kl_mean"] > m["kl_mean"] + 0.01 and m["pairs_share_warning"] is None
    assert m["pairs_share_of_kl_reduction"] == pytest.approx(1.0, abs=1e-4)
    assert report.per_head["bias_kl_mean"].mean() == pytest.approx(m["bias_kl_mean"], rel=1e-6)


def test_evaluate_qk_numbers_are_internally_consistent(adapter, batches, random_qk):
    report = evaluate_qk(adapter, random_qk, batches)
    m, heads = report.per_layer, report.per_head
    spec = adapter.spec

    # Recompute by hand.
    true_patterns, recon_patterns, fqs, fks, qs, ks, q_hats, k_hats = [], [], [], [], [], [], [], []
    for tokens in batches:
        acts = adapter.attention(tokens, LAYER, ("resid_normed", "q", "k", "pattern"))
        with torch.no_grad():
            q_hat, k_hat, f_q, f_k = random_qk(resid_normed=acts.resid_normed)
        true_patterns.append(acts.pattern)
        recon_patterns.append(adapter.pattern_from_qk(q_hat, k_hat, LAYER))
        fqs.append(f_q), fks.append(f_k), qs.append(acts.q), ks.append(acts.k)
        q_hats.append(q_hat), k_hats.append(k_hat)
    true, recon = torch.cat(true_patterns), torch.cat(recon_patterns)
    kl = kl_rows(true, recon)
    assert m["kl_mean"] == pytest.approx(float(kl.mean()), rel=1e-5)
    assert m["kl_mean"] > 1e-3
    assert np.allclose(heads["kl_mean"], kl.mean((0, 2)).numpy(), rtol=1e-5)
    assert np.allclose(heads["kl_max"], kl.amax((0, 2)).numpy(), rtol=1e-5)
    assert list(heads["head"]) == list(range(spec.n_heads))
    assert m["l0_q"] == pytest.approx(l0(torch.cat(fqs)))
    assert m["l0_k"] == pytest.approx(l0(torch.cat(fks)))
    assert torch.allclose(report.density_q, feature_density(fqs))
    assert m["live_k"] == live_features(feature_density(fks))
    assert m["density_hist_q"]["count"].sum() == random_qk.cfg.d_hidden_q
    assert m["var_explained_q"] == pytest.approx(
        variance_explained(torch.cat(qs), torch.cat(q_hats)), rel=1e-6
    )
    assert m["var_explained_k"] == pytest.approx(
        variance_explained(torch.cat(ks), torch.cat(k_hats)), rel=1e-6
    )
    all_tokens = torch.cat(batches)
    assert m["ce_clean"] == pytest.approx(float(adapter.loss(all_tokens).mean()), abs=1e-5)
    mean_abl = mean_pattern(true)
    direct = patched_losses(adapter, all_tokens, LAYER, {"recon": recon, "mean": mean_abl})
    assert m["ce_recon"] == pytest.approx(direct["ce"]["recon"], abs=1e-5)
    assert m["ce_mean_ablation"] == pytest.approx(direct["ce"]["mean"], abs=1e-5)
    assert m["logit_kl_recon"] == pytest.approx(direct["logit_kl"]["recon"], rel=1e-4)
    assert m["ce_recovered_uniform"] == pytest.approx(
        recovered_fraction(m["ce_clean"], m["ce_recon"], m["ce_uniform"])
    )
    # The CE figures behind the ratio: the absolute loss increase, intervals over the contexts
    # (bootstrapped from the same per-context losses as a direct run) and the warning.
    by_hand = ce_recovered(
        direct["ce_per_context"]["clean"], direct["ce_per_context"]["recon"],
        direct["ce_per_context"]["mean"],
    )  # fmt: skip
    full = report.ce_recovered["recon_vs_mean"]
    assert full.n_contexts == m["n_contexts"] == by_hand.n_contexts
    assert full.loss_increase == pytest.approx(by_hand.loss_increase, abs=1e-5)
    assert full.ratio_interval == pytest.approx(by_hand.ratio_interval, abs=1e-3)
    assert m["loss_increase_recon"] == pytest.approx(m["ce_recon"] - m["ce_clean"])
    for key in ("loss_increase_recon", "ablation_damage_uniform", "ce_recovered_uniform"):
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"]
    assert m["ablation_damage_uniform"] == pytest.approx(m["ce_uniform"] - m["ce_clean"])
    assert m["ce_recovered_mean_warning"] == full.warning
    assert set(report.ce_recovered) == {"recon_vs_uniform", "recon_vs_mean"}
    assert m["masked_kl_mean"] is None and m["pairs_kept"] is None
    assert m["masked_ce_recovered_uniform_lo"] is None
    assert "masked_kl_mean" not in heads.columns

    table = report.table()
    assert len(table) == 1 and table.loc[0, "kl_mean"] == m["kl_mean"]
    assert "density_hist_q" not in table.columns
    encoded = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert encoded["per_layer"]["density_hist_q"][0]["log10_lo"] is None  # NaN edges of "dead"
    assert encoded["per_layer"]["ce_clean"] == pytest.approx(m["ce_clean"])
    assert len(encoded["per_head"]) == spec.n_heads
    uniform = encoded["ce_recovered"]["recon_vs_uniform"]
    assert uniform["loss_increase"] == pytest.approx(m["loss_increase_recon"])
    assert len(uniform["ratio_interval"]) == 2 and "warning" in uniform


def test_evaluate_qk_reads_store_batches_and_mixed_lengths(adapter, random_qk):
    g = torch.Generator().manual_seed(9)
    short = torch.randint(1, 49152, (2, 6), generator=g)
    long = torch.randint(1, 49152, (2, 9), generator=g)
    report = evaluate_qk(adapter, random_qk, [{"tokens": short.int()}, long])
    assert report.per_layer["n_tokens"] == short.numel() + long.numel()
    assert math.isfinite(report.per_layer["ce_mean_ablation"])
    with pytest.raises(ValueError, match="at least one batch"):
        evaluate_qk(adapter, random_qk, [])


def test_evaluate_qk_with_the_real_masked_map(adapter, batches, random_qk):
    """A random dictionary's masked map through attnviz.analysis.qk.pattern_from_features."""
    pairs = PairTable.full(random_qk.cfg.d_hidden_q, random_qk.cfg.d_hidden_k, 4)
    report = evaluate_qk(adapter, random_qk, batches[:1], pairs=pairs)
    m = report.per_layer
    assert math.isfinite(m["masked_kl_mean"]) and math.isfinite(m["ce_masked"])
    assert m["pairs_fraction_masked"] == 0.0
    # Bias-only is every pair at mask 0: the same KL through the other path of the engine.
    zeroed = dataclasses.replace(pairs, value=torch.zeros_like(pairs.value))
    by_zero = evaluate_qk(adapter, random_qk, batches[:1], pairs=zeroed).per_layer
    assert by_zero["masked_kl_mean"] == pytest.approx(m["bias_kl_mean"], rel=1e-5)
    share = (m["bias_kl_mean"] - m["masked_kl_mean"]) / (m["bias_kl_mean"] - m["kl_mean"])
    assert m["pairs_share_of_kl_reduction"] == pytest.approx(share)


def test_qk_feature_density_matches_the_full_evaluation_and_reads_one_layer(
    adapter, batches, random_qk
):
    from attnviz.analysis.qk_report import qk_feature_density

    report = evaluate_qk(adapter, random_qk, batches)
    (densities,), n_tokens = qk_feature_density(adapter, [random_qk], batches)
    assert n_tokens == sum(b.numel() for b in batches)
    assert torch.equal(densities[0], report.density_q)
    assert torch.equal(densities[1], report.density_k)
    other = dataclasses.replace(random_qk.cfg, layer=random_qk.cfg.layer + 1)
    with pytest.raises(ValueError, match="one layer"):
        qk_feature_density(adapter, [random_qk, type(random_qk)(other)], batches)


def test_liveness_counts_dead_and_rare_features():
    from attnviz.analysis.metrics import liveness

    density = torch.tensor([0.0, 5e-6, 1e-5, 5e-5, 1e-4, 0.3], dtype=torch.float64)
    out = liveness(density)
    assert out["dead"] == pytest.approx(2 / 6) and out["rare"] == pytest.approx(2 / 6)
    assert out["live"] == pytest.approx(4 / 6)
