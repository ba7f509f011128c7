"""Scores from QK-dictionary features through a sparse pair table (attnviz.analysis.qk):
the sparse path against a dense reference and against scores of the reconstructions, for rotary
(tiny Llama, grouped-query attention; adjacent pairs; partial rotary) and absolute positions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnviz.analysis.patterns import attention_scores, pattern_from_qk
from attnviz.analysis.qk import (
    ROW_KINDS,
    decompose_score,
    dense_masked_scores,
    feature_map,
    key_bias_term,
    masked_scores,
    pair_contributions,
    pattern_from_features,
    query_bias_term,
    rank_pairs,
)
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKConfig, QKDictionary
from attnviz.models.rotary import Rotary

D_Q, D_K, N, BATCH = 24, 20, 11, 2


@pytest.fixture(scope="module")
def gpt2_adapter(tiny_tokenizer):
    """Absolute positions, 4 heads (no grouping)."""
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from tests.tiny_models import tiny_gpt2

    return NNsightAdapter(tiny_gpt2(seed=0), tiny_tokenizer, "tiny-gpt2", bos_token_id=0)


def make_qk(spec, seed: int = 0, d_q: int = D_Q, d_k: int = D_K) -> QKDictionary:
    """A random dictionary with decoder rows of varied norm and non-zero output biases."""
    qk = QKDictionary(QKConfig.for_model(spec, 0, d_hidden_q=d_q, d_hidden_k=d_k), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for coder in (qk.query, qk.key):
            coder.W_dec.mul_(0.5 + torch.rand(coder.W_dec.shape[0], 1, generator=g))
            coder.b_out.copy_(0.5 * torch.randn(coder.b_out.shape, generator=g))
    return qk


def features(batch: int, n: int, d: int, density: float = 0.3, seed: int = 0) -> torch.Tensor:
    """Sparse non-negative activations [batch, n, d]."""
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(batch, n, d, generator=g) < density
    return (0.2 + torch.rand(batch, n, d, generator=g)) * active


def random_table(d_q: int, d_k: int, n_heads: int, kept: float = 0.05, seed: int = 0) -> PairTable:
    """About `kept` of the pairs, with mask values in (0.1, 1)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(d_q, d_k, n_heads, generator=g) < kept
    return PairTable.from_dense(keep * (0.1 + 0.9 * torch.rand(d_q, d_k, n_heads, generator=g)))


def rotary_tables(n: int, rotary_dim: int, adjacent: bool, base: float = 100.0) -> Rotary:
    """Rotary tables in either layout (a small base so every frequency turns within n)."""
    theta = base ** (-torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    angle = torch.arange(n).float()[:, None] * theta
    if adjacent:
        cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
    else:
        cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    return Rotary(cos=cos, sin=sin, adjacent_pairs=adjacent)


SCHEMES = ["llama", "gpt2", "absolute_gqa", "adjacent", "partial", "partial_adjacent"]


@pytest.fixture(params=SCHEMES)
def setup(request, tiny_llama_adapter, gpt2_adapter):
    """(dictionary, rotary or None) for one position scheme; all but gpt2 use grouped heads."""
    name = request.param
    llama_spec = tiny_llama_adapter.spec  # rotary, 4 query heads / 2 kv heads, d_head 16
    assert llama_spec.n_heads != llama_spec.n_kv_heads
    if name == "llama":
        return make_qk(llama_spec), tiny_llama_adapter.rotary(0, N)
    if name == "gpt2":
        return make_qk(gpt2_adapter.spec), gpt2_adapter.rotary(0, N)
    if name == "absolute_gqa":
        spec = dataclasses.replace(llama_spec, positional="absolute")
        return make_qk(spec, seed=3), None
    d_head = llama_spec.d_head
    rotary = {
        "adjacent": rotary_tables(N, d_head, adjacent=True),
        "partial": rotary_tables(N, d_head // 2, adjacent=False),
        "partial_adjacent": rotary_tables(N, d_head // 4, adjacent=True),
    }[name]
    return make_qk(llama_spec, seed=5), rotary


def reconstruction_scores(qk, f_q, f_k, rotary, biases: bool = True) -> torch.Tensor:
    """Scores of the decoded q̂, k̂ (rotated by position), as the model would compute them."""
    with torch.no_grad():
        q, k = qk.decode_q(f_q), qk.decode_k(f_k)
        if not biases:
            q = q - qk.query.b_out.view(q.shape[-2:])
            k = k - qk.key.b_out.view(k.shape[-2:])
    if rotary is not None:
        q, k = rotary.apply(q), rotary.apply(k)
    return attention_scores(q, k, qk.cfg.attn_scale)


def assert_scores_close(actual, expected, atol=1e-5, rtol=1e-5):
    assert actual.shape == expected.shape
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(actual)), "the causal -inf mask differs"
    torch.testing.assert_close(actual[finite], expected[finite], atol=atol, rtol=rtol)


# ---- sparse path = dense reference -----------------------------------------------------------


@pytest.mark.parametrize("rows", [False, True])
def test_sparse_matches_dense(setup, rows):
    qk, rotary = setup
    f_q, f_k = features(BATCH, N, D_Q, seed=1), features(BATCH, N, D_K, seed=2)
    table = random_table(D_Q, D_K, qk.cfg.n_heads, seed=4)
    assert 0.02 < table.fraction_kept < 0.1
    dense = dense_masked_scores(qk, f_q, f_k, table, rotary, include_row_constants=rows)
    sparse = masked_scores(qk, f_q, f_k, table, rotary, include_row_constants=rows)
    assert_scores_close(sparse, dense)
    # Tiny blocks run every chunking path (query chunks, item ranges, split units): same answer.
    tiny = masked_scores(qk, f_q, f_k, table, rotary, include_row_constants=rows, chunk=5)
    assert_scores_close(tiny, dense)


def test_pairs_sharing_a_score_row_are_merged_exactly(setup):
    """Many query features pairing with the same key feature on the same head at the same
    destination: masked_scores sums them before meeting the sources (merge), and must still
    equal the dense reference and the per-pair contributions."""
    qk, rotary = setup
    f_q, f_k = features(1, N, D_Q, density=0.9, seed=6), features(1, N, D_K, density=0.9, seed=7)
    mask = torch.zeros(D_Q, D_K, qk.cfg.n_heads)
    mask[:, :3, :] = 0.5 + torch.rand(
        D_Q, 3, qk.cfg.n_heads, generator=torch.Generator().manual_seed(8)
    )
    table = PairTable.from_dense(mask)  # every query feature pairs with key features 0-2
    dense = dense_masked_scores(qk, f_q, f_k, table, rotary)
    assert_scores_close(masked_scores(qk, f_q, f_k, table, rotary), dense)
    assert_scores_close(masked_scores(qk, f_q, f_k, table, rotary, chunk=7), dense)


def test_positions_shift_rotary_only(setup):
    """Explicit positions rotate like the model at those positions (rotary) and change nothing
    for absolute models."""
    qk, rotary = setup
    f_q, f_k = features(1, 6, D_Q, seed=7), features(1, 6, D_K, seed=8)
    table = random_table(D_Q, D_K, qk.cfg.n_heads, seed=9)
    positions = torch.arange(3, 9)
    shifted = masked_scores(qk, f_q, f_k, table, rotary, positions=positions)
    assert_scores_close(shifted, dense_masked_scores(qk, f_q, f_k, table, rotary, positions))
    if rotary is None:
        assert_scores_close(shifted, masked_scores(qk, f_q, f_k, table, None))


def test_pair_contributions_add_up_to_scores(setup):
    """Blocks from pair_contributions, causally filtered and scattered, plus the bias-only
    scores, are masked_scores; each value is one pair's term."""
    qk, rotary = setup
    f_q, f_k = features(1, N, D_Q, seed=26)[0], features(1, N, D_K, seed=27)[0]
    table = random_table(D_Q, D_K, qk.cfg.n_heads, seed=28)
    empty = PairTable.from_dense(torch.zeros(table.shape))
    rows = rotary is None  # keep everything, so both sides hold the same terms
    total = masked_scores(qk, f_q, f_k, empty, rotary, include_row_constants=rows).clone()
    flat = total.view(-1)
    for blk in pair_contributions(qk, f_q, f_k, table, rotary, chunk=9):
        assert blk.src.numel() and blk.value.shape == (blk.dest.numel(), blk.src.numel())
        keep = blk.src[None, :] <= blk.dest[:, None]
        r, c = keep.nonzero(as_tuple=True)
        flat.index_add_(0, blk.at[r] + blk.src[c], blk.value[r, c])
        assert (f_q[blk.dest, table.q[blk.pair]] > 0).all()
        assert (f_k[blk.src][:, table.k[blk.pair]] > 0).all()
    expected = masked_scores(qk, f_q, f_k, table, rotary, include_row_constants=rows)
    assert_scores_close(total, expected)


# ---- all pairs = reconstruction; no pairs = biases only --------------------------------------


def test_all_pairs_equal_reconstruction(setup):
    qk, rotary = setup
    f_q, f_k = features(BATCH, N, D_Q, seed=11), features(BATCH, N, D_K, seed=12)
    reference = reconstruction_scores(qk, f_q, f_k, rotary)
    full = PairTable.full(D_Q, D_K, qk.cfg.n_heads)
    for pairs in (None, full):
        scores = masked_scores(qk, f_q, f_k, pairs, rotary, include_row_constants=True)
        assert_scores_close(scores, reference)
        without_rows = masked_scores(qk, f_q, f_k, pairs, rotary)
        if rotary is not None:
            # Rotary: nothing is a row constant, so nothing may be dropped.
            assert_scores_close(without_rows, reference)
        else:
            # Absolute: what is dropped is constant along each row, so the pattern is the same.
            diff = (reference - without_rows).nan_to_num(0.0, 0.0, 0.0)
            lower = torch.ones(N, N).tril().bool()
            spread = diff - diff[..., :1]
            assert spread[..., lower].abs().max() < 1e-5
            assert diff[..., lower].abs().max() > 1e-3  # the constants were not zero
            q, k = qk.decode_q(f_q).detach(), qk.decode_k(f_k).detach()
            torch.testing.assert_close(
                without_rows.softmax(-1), pattern_from_qk(q, k, qk.cfg.attn_scale), atol=1e-6,
                rtol=1e-5,
            )  # fmt: skip


def test_empty_table_leaves_bias_terms(setup):
    qk, rotary = setup
    f_q, f_k = features(BATCH, N, D_Q, seed=13), features(BATCH, N, D_K, seed=14)
    empty = PairTable.from_dense(torch.zeros(D_Q, D_K, qk.cfg.n_heads))
    assert empty.nnz == 0
    scores = masked_scores(qk, f_q, f_k, empty, rotary, include_row_constants=True)
    pair_terms = reconstruction_scores(qk, f_q, f_k, rotary, biases=False)
    assert_scores_close(scores, reconstruction_scores(qk, f_q, f_k, rotary) - pair_terms, 1e-4)
    # Masked-out pairs must make a difference (the features' own terms are not small).
    assert (pair_terms - scores).nan_to_num(0.0, 0.0, 0.0).abs().max() > 1e-2


def test_pattern_from_features(setup):
    qk, rotary = setup
    f_q, f_k = features(BATCH, N, D_Q, seed=15), features(BATCH, N, D_K, seed=16)
    table = random_table(D_Q, D_K, qk.cfg.n_heads, seed=17)
    pattern = pattern_from_features(qk, f_q, f_k, table, rotary)
    assert pattern.shape == (BATCH, qk.cfg.n_heads, N, N)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(BATCH, qk.cfg.n_heads, N))
    assert pattern.triu(1).abs().max() == 0
    expected = dense_masked_scores(qk, f_q, f_k, table, rotary).softmax(-1)
    torch.testing.assert_close(pattern, expected, atol=1e-6, rtol=1e-5)


# ---- decompose_score ------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [False, True])
def test_decompose_sums_to_score(setup, rows):
    qk, rotary = setup
    f_q, f_k = features(1, N, D_Q, 0.5, seed=18), features(1, N, D_K, 0.5, seed=19)
    table = random_table(D_Q, D_K, qk.cfg.n_heads, kept=0.3, seed=20)
    scores = masked_scores(qk, f_q, f_k, table, rotary, include_row_constants=rows)
    dense_mask = table.to_dense()
    for dest, src, head in [(N - 1, 2, 0), (7, 7, qk.cfg.n_heads - 1), (5, 0, 1)]:
        frame = decompose_score(
            qk, f_q[0, dest], f_k[0, src], dest, src, head, table, rotary, top=3,
            include_row_constants=rows,
        )  # fmt: skip
        assert abs(frame["contribution"].sum() - scores[0, head, dest, src].item()) < 1e-5
        assert set(frame["kind"]) <= set(ROW_KINDS)
        pair_rows = frame[frame["kind"] == "pair"]
        a, b = f_q[0, dest].nonzero()[:, 0], f_k[0, src].nonzero()[:, 0]
        n_kept = int((dense_mask[a][:, b][:, :, head] > 0).sum())
        assert len(pair_rows) == min(3, n_kept)
        other = frame[frame["kind"] == "other_pairs"]
        assert len(other) == 1 and int(other["n_pairs"].iloc[0]) == n_kept - len(pair_rows)
        magnitudes = pair_rows["contribution"].abs().to_numpy()
        assert (magnitudes[:-1] >= magnitudes[1:]).all()
        torch.testing.assert_close(
            torch.tensor(pair_rows["contribution"].to_numpy()),
            torch.tensor((pair_rows["f_q"] * pair_rows["f_k"] * pair_rows["mask"]
                          * pair_rows["map_weight"]).to_numpy()),
        )  # fmt: skip
        bias_kinds = set(frame["kind"]) - {"pair", "other_pairs"}
        if rotary is None and not rows:
            assert bias_kinds == {"query_bias_x_key"}
        else:
            assert bias_kinds == {"query_x_key_bias", "query_bias_x_key", "bias_x_bias"}
        assert frame["row_constant"].any() == (rotary is None and rows)


def test_decompose_without_table_matches_reconstruction(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec)
    rotary = tiny_llama_adapter.rotary(0, N)
    f_q, f_k = features(1, N, D_Q, 0.4, seed=21), features(1, N, D_K, 0.4, seed=22)
    reference = reconstruction_scores(qk, f_q, f_k, rotary)
    frame = decompose_score(qk, f_q[0, 9], f_k[0, 4], 9, 4, 2, None, rotary, top=5)
    assert abs(frame["contribution"].sum() - reference[0, 2, 9, 4].item()) < 1e-5
    assert (frame.loc[frame["kind"] == "pair", "mask"] == 1).all()


# ---- rank_pairs -----------------------------------------------------------------------------


def one_pair_table(qk, a: int, b: int, head: int) -> PairTable:
    mask = torch.zeros(D_Q, D_K, qk.cfg.n_heads)
    mask[a, b, head] = 0.5
    return PairTable.from_dense(mask)


def test_rank_pairs_counts_only_causal_cooccurrence(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec)
    rotary = tiny_llama_adapter.rotary(0, 8)
    f_q, f_k = torch.zeros(1, 8, D_Q), torch.zeros(1, 8, D_K)
    f_q[0, 2, 3] = 1.5  # query feature 3 at position 2 only
    f_k[0, 3, 7] = 2.0  # key feature 7 just after it: no causal co-occurrence
    table = one_pair_table(qk, 3, 7, 1)
    causal = rank_pairs(qk, table, f_q, f_k, rotary)
    assert causal["cooccurrences"].tolist() == [0] and causal["contribution_total"].iloc[0] == 0
    either = rank_pairs(qk, table, f_q, f_k, rotary, causal=False)
    assert either["cooccurrences"].tolist() == [1] and either["contribution_total"].iloc[0] > 0
    f_k[0, 1, 7] = 1.0  # now also before it
    ranked = rank_pairs(qk, table, f_q, f_k, rotary)
    assert ranked["cooccurrences"].tolist() == [1]
    cell = decompose_score(qk, f_q[0, 2], f_k[0, 1], 2, 1, 1, table, rotary)
    pair = cell[cell["kind"] == "pair"]["contribution"].iloc[0]
    assert ranked["contribution_total"].iloc[0] == pytest.approx(abs(pair), rel=1e-5)
    assert ranked["contribution_signed"].iloc[0] == pytest.approx(pair, rel=1e-5)


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_rank_pairs_matches_brute_force(setup, chunk):
    qk, rotary = setup
    f_q, f_k = features(BATCH, N, D_Q, seed=23), features(BATCH, N, D_K, seed=24)
    table = random_table(D_Q, D_K, qk.cfg.n_heads, seed=25)
    ranked = rank_pairs(qk, table, f_q, f_k, rotary, chunk=chunk)
    assert len(ranked) == table.nnz
    totals = ranked["contribution_total"].to_numpy()
    assert (totals[:-1] >= totals[1:]).all()
    fmap = feature_map(qk)
    group = qk.cfg.n_heads // qk.cfg.n_kv_heads
    for row in ranked.head(4).itertuples():
        a, b, h = row.q_feature, row.k_feature, row.head
        assert row.map_weight == pytest.approx(fmap[a, b, h].item(), abs=1e-6)
        dq, dk = qk.dec_q[a, h].detach(), qk.dec_k[b, h // group].detach()
        total, count = 0.0, 0
        for bi in range(BATCH):
            for i in range(N):
                for j in range(i + 1):
                    if f_q[bi, i, a] and f_k[bi, j, b]:
                        x, y = dq, dk
                        if rotary is not None:
                            x = rotary.apply(dq[None, None], torch.tensor([i]))[0, 0]
                            y = rotary.apply(dk[None, None], torch.tensor([j]))[0, 0]
                        total += abs(f_q[bi, i, a] * f_k[bi, j, b] * row.mask * (x @ y)).item()
                        count += 1
        assert row.cooccurrences == count
        assert row.contribution_total == pytest.approx(total / qk.cfg.attn_scale, rel=1e-4)
        assert row.contribution_mean == pytest.approx(row.contribution_total / max(count, 1))


# ---- maps -----------------------------------------------------------------------------------


def test_feature_maps(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec)
    cfg = qk.cfg
    group, scale = cfg.n_heads // cfg.n_kv_heads, cfg.attn_scale
    fmap = feature_map(qk)
    assert fmap.shape == (D_Q, D_K, cfg.n_heads)
    dq, dk = qk.dec_q.detach(), qk.dec_k.detach()
    for h in range(cfg.n_heads):
        expected = dq[:, h] @ dk[:, h // group].T / scale
        torch.testing.assert_close(fmap[..., h], expected)
        torch.testing.assert_close(feature_map(qk, head=h), expected)
    b_q = qk.query.b_out.detach().view(cfg.n_heads, cfg.d_head)
    b_k = qk.key.b_out.detach().view(cfg.n_kv_heads, cfg.d_head)
    keys = key_bias_term(qk)
    queries = query_bias_term(qk)
    for h in range(cfg.n_heads):
        torch.testing.assert_close(keys[:, h], dk[:, h // group] @ b_q[h] / scale)
        torch.testing.assert_close(queries[:, h], dq[:, h] @ b_k[h // group] / scale)
    # At an offset the map is <R_i dec_Q, R_(i - offset) dec_K> for any i.
    rotary = tiny_llama_adapter.rotary(0, 16)
    offset, i, h = 5, 12, 3
    at = feature_map(qk, head=h, rotary=rotary, offset=offset)
    rq = rotary.apply(dq[:, h][None], torch.tensor([i]))[0]
    rk = rotary.apply(dk[:, h // group][None], torch.tensor([i - offset]))[0]
    torch.testing.assert_close(at, rq @ rk.T / scale, atol=1e-5, rtol=1e-4)
    assert (at - fmap[..., h]).abs().max() > 1e-3


# ---- scale and validation -------------------------------------------------------------------


def test_cost_follows_active_features_not_width(tiny_llama_adapter):
    """60,000 features a side: a dense map would be 60k x 60k x 4 heads (57 GB). The sparse path
    touches only the active features and kept pairs."""
    width = 60_000
    qk = make_qk(tiny_llama_adapter.spec, d_q=width, d_k=width)
    rotary = tiny_llama_adapter.rotary(0, 16)
    g = torch.Generator().manual_seed(0)
    f_q, f_k = torch.zeros(1, 16, width), torch.zeros(1, 16, width)
    active = torch.randint(0, 50, (16, 4), generator=g)  # a few shared features, so pairs meet
    f_q[0].scatter_(1, active, 1.0)
    f_k[0].scatter_(1, active.flip(0), 1.0)
    q, k = torch.meshgrid(torch.arange(50), torch.arange(50), indexing="ij")
    table = PairTable(
        q=q.flatten(), k=k.flatten(), head=torch.randint(0, 4, (2500,), generator=g),
        value=torch.rand(2500, generator=g), shape=(width, width, 4),
    )  # fmt: skip
    scores = masked_scores(qk, f_q, f_k, table, rotary)
    # The same features, relabelled into a narrow dictionary, give the same scores.
    small = make_qk(tiny_llama_adapter.spec, d_q=50, d_k=50)
    with torch.no_grad():
        small.query.W_dec.copy_(qk.query.W_dec[:50])
        small.key.W_dec.copy_(qk.key.W_dec[:50])
        small.query.b_out.copy_(qk.query.b_out)
        small.key.b_out.copy_(qk.key.b_out)
    narrow = PairTable(table.q, table.k, table.head, table.value, (50, 50, 4))
    expected = dense_masked_scores(small, f_q[..., :50], f_k[..., :50], narrow, rotary)
    assert_scores_close(scores, expected)


def test_rejects_mismatched_inputs(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec)
    rotary = tiny_llama_adapter.rotary(0, N)
    f_q, f_k = features(1, N, D_Q), features(1, N, D_K)
    with pytest.raises(ValueError, match="pair table"):
        masked_scores(qk, f_q, f_k, random_table(D_K, D_Q, 4), rotary)
    with pytest.raises(ValueError, match="wide"):
        masked_scores(qk, f_k, f_q, None, rotary)
    with pytest.raises(ValueError, match="rotary tables"):
        masked_scores(qk, f_q, f_k, None, rotary, positions=torch.arange(N) + 300)
    unbatched = masked_scores(qk, f_q[0], f_k[0], None, rotary)
    assert unbatched.shape == (4, N, N)
