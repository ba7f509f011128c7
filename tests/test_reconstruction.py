"""attnviz.analysis.reconstruction: one prompt's true pattern beside its two reconstructions, on a
tiny random Llama (rotary, grouped-query attention) with a random dictionary and pair table."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnviz.analysis.metrics import kl_rows, mean_row_kl
from attnviz.analysis.qk import masked_scores
from attnviz.analysis.reconstruction import reconstruct
from attnviz.errors import DictionaryMismatchError
from tests.helpers import TEXT, make_qk


@pytest.fixture(scope="module")
def rec(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec)
    return reconstruct(tiny_llama_adapter, qk, tiny_llama_adapter.to_tokens(TEXT))


def test_patterns_are_causal_distributions(rec, tiny_llama_adapter):
    n = rec.n_tokens
    heads = tiny_llama_adapter.spec.n_heads
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    for kind in ("true", "transcoder", "masked"):
        p = rec.pattern(kind)
        assert p.shape == (heads, n, n)
        assert torch.allclose(p.sum(-1), torch.ones(heads, n), atol=1e-5)
        assert (p[:, future] == 0).all()
    want = tiny_llama_adapter.attention(rec.tokens[None], 1, ["pattern"]).pattern[0]
    torch.testing.assert_close(rec.true, want.float())


def test_transcoder_pattern_is_the_reconstructions_pattern(rec, tiny_llama_adapter):
    q_hat, k_hat = rec.qk.decode_q(rec.f_q), rec.qk.decode_k(rec.f_k)
    want = tiny_llama_adapter.pattern_from_qk(q_hat[None], k_hat[None], 1)[0]
    torch.testing.assert_close(rec.transcoder, want, atol=1e-5, rtol=1e-4)
    # the masked map differs (the table keeps ~30% of pairs) but is a pattern of the same prompt
    assert not torch.allclose(rec.masked, rec.transcoder, atol=1e-4)


def test_kl_per_head_leaves_out_the_first_row(rec):
    want = kl_rows(rec.true, rec.transcoder)[:, 1:].mean(-1)
    torch.testing.assert_close(rec.kl_transcoder, want)
    assert rec.kl_masked is not None and (rec.kl_masked > 0).all()
    assert (mean_row_kl(rec.true, rec.true) == 0).all()
    assert mean_row_kl(rec.true[:, :1, :1], rec.true[:, :1, :1]).shape == (rec.true.shape[0],)


def test_the_bias_only_kl_is_the_map_with_every_pair_at_zero(rec):
    """The baseline the kept pairs improve on: no pair at all; the same as the whole table with
    every mask value zeroed (the engine's other path)."""
    zeroed = dataclasses.replace(rec.qk.pairs, value=torch.zeros_like(rec.qk.pairs.value))
    scores = masked_scores(rec.qk, rec.f_q, rec.f_k, zeroed, rec.rotary)
    torch.testing.assert_close(rec.kl_bias, mean_row_kl(rec.true, scores.softmax(-1)))
    assert not torch.allclose(rec.kl_bias, rec.kl_masked)


@pytest.mark.parametrize("kind", ["transcoder", "masked"])
def test_score_matches_the_full_score_map_and_decomposition_adds_up(rec, kind):
    pairs = rec.qk.pairs if kind == "masked" else None
    full = masked_scores(rec.qk, rec.f_q, rec.f_k, pairs, rec.rotary, include_row_constants=True)
    n = rec.n_tokens
    for head, dest, src in [(0, n - 1, 0), (3, n - 1, n - 4), (2, 5, 5), (1, 7, 2)]:
        score = rec.score(head, dest, src, kind)
        assert score == pytest.approx(float(full[head, dest, src]), abs=1e-4)
        frame = rec.decompose(head, dest, src, kind, top=5)
        assert frame["contribution"].sum() == pytest.approx(score, abs=1e-4)
        assert (frame["kind"] == "pair").sum() <= 5


def test_softmax_of_scores_is_the_masked_pattern(rec):
    n = rec.n_tokens
    scores = torch.tensor([rec.score(2, n - 1, j, "masked") for j in range(n)])
    torch.testing.assert_close(scores.softmax(0), rec.masked[2, n - 1], atol=1e-5, rtol=1e-4)


def test_bad_cells_and_kinds_are_named(rec):
    n = rec.n_tokens
    with pytest.raises(ValueError, match="not a causal cell"):
        rec.score(0, 2, 3)
    with pytest.raises(ValueError, match="not a causal cell"):
        rec.decompose(0, n, 0)
    with pytest.raises(ValueError, match="head 9 is out of range"):
        rec.score(9, 2, 1)
    with pytest.raises(ValueError, match="unknown pattern"):
        rec.pattern("other")


def test_without_a_pair_table_there_is_no_masked_map(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec, pairs=False)
    rec = reconstruct(tiny_llama_adapter, qk, tiny_llama_adapter.to_tokens(TEXT)[0])
    assert rec.masked is None and rec.kl_masked is None
    with pytest.raises(ValueError, match="no pair table"):
        rec.score(0, 3, 1, "masked")
    assert rec.decompose(0, 3, 1, "transcoder")["contribution"].notna().all()


def test_a_dictionary_for_another_shape_is_refused(tiny_llama_adapter, tiny_tokenizer):
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from tests.tiny_models import tiny_gpt2

    gpt2 = NNsightAdapter(tiny_gpt2(seed=0), tiny_tokenizer, "tiny-gpt2", bos_token_id=0)
    qk = make_qk(tiny_llama_adapter.spec)
    with pytest.raises(DictionaryMismatchError, match="does not fit tiny-gpt2"):
        reconstruct(gpt2, qk, gpt2.to_tokens(TEXT))


def test_the_masked_map_and_kls_can_come_later(tiny_llama_adapter):
    from attnviz.analysis.reconstruction import complete

    qk = make_qk(tiny_llama_adapter.spec, layer=1, pairs=True)
    tokens = tiny_llama_adapter.to_tokens(TEXT)
    whole = reconstruct(tiny_llama_adapter, qk, tokens)
    first = reconstruct(tiny_llama_adapter, qk, tokens, masked=False)
    assert first.masked is None and first.kl_transcoder is None and first.kl_masked is None
    torch.testing.assert_close(first.transcoder, whole.transcoder)
    complete(first)
    torch.testing.assert_close(first.masked, whole.masked)
    torch.testing.assert_close(first.kl_transcoder, whole.kl_transcoder)
    torch.testing.assert_close(first.kl_masked, whole.kl_masked)
