"""Induction and previous-token scores (how the shipped SAEs' layers are chosen)."""

from __future__ import annotations

import torch

from attnviz.analysis.patterns import head_scores, induction_score, repeated_random_tokens


def test_a_perfect_induction_head_scores_one_and_a_previous_token_head_zero():
    tokens = repeated_random_tokens(6, vocab=5000, bos=0, batch=2)
    n = tokens.shape[1]  # 13: BOS, r (6), r (6)
    induction = torch.zeros(2, n, n)
    induction[:, :, 0] = 1.0  # rest on BOS ...
    for t in range(7, n):  # ... except in the second copy: the token after the earlier occurrence
        induction[:, t] = 0
        induction[:, t, t - 6 + 1] = 1.0
    previous = torch.zeros(2, n, n)
    previous[:, 0, 0] = 1.0
    for t in range(1, n):
        previous[:, t, t - 1] = 1.0
    pattern = torch.stack([induction, previous], dim=1)  # [batch, 2 heads, n, n]
    scores = induction_score(pattern, tokens)
    assert torch.allclose(scores, torch.tensor([1.0, 0.0]))


def test_head_scores_find_the_random_tiny_models_heads_unremarkable(tiny_llama_adapter):
    frame = head_scores(tiny_llama_adapter, [0, 1], n_tokens=10)
    assert list(frame.columns) == ["layer", "head", "induction", "previous"]
    assert len(frame) == 2 * tiny_llama_adapter.spec.n_heads
    assert frame.induction.between(0, 1).all() and frame.previous.between(0, 1).all()
    # A random model has no induction head: nothing near the score of a real one (0.66).
    assert frame.induction.max() < 0.3
