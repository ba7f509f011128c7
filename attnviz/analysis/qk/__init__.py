"""Attention scores rebuilt from QK-dictionary features through a sparse pair table (step 2 of
"QK transcoders"), and the tables that explain them.

A query dictionary gives activations f_Q[i, a] at each destination i and a key dictionary f_K[j, b]
at each source j. With q̂_i = Σ_a f_Q[i,a] dec_Q[a] + b_Q and k̂_j = Σ_b f_K[j,b] dec_K[b] + b_K,
head h scores

    s_h(i, j) = Σ_{a,b} m[a,b,h] f_Q[i,a] f_K[j,b] <R_i dec_Q[a,h], R_j dec_K[b,kv(h)]> / scale
              + <R_i (q̂_i - b_Q)_h, R_j b_K,kv(h)> / scale     query features x key bias
              + <R_i b_Q,h,        R_j (k̂_j - b_K)_kv(h)> / scale   query bias x key features
              + <R_i b_Q,h,        R_j b_K,kv(h)> / scale     bias x bias

where R_p rotates by position p (the identity for absolute positions), kv(h) = h // (n_heads /
n_kv_heads) and m[a,b,h] in [0, 1] is the pair table's mask (absent pairs: 0). Only pair terms are
masked. With m = 1 everywhere the sum is <R_i q̂_i, R_j k̂_j> / scale, the reconstruction's score.
With absolute positions the query-features x key-bias and bias x bias terms depend on i alone:
constant along a softmax row, they are left out unless `include_row_constants`.

For rotary models <R_i x, R_j y> depends only on j - i: for each rotated pair (x1, x2), (y1, y2)
turning at frequency θ it is (x1 y1 + x2 y2) cos(θ(j-i)) - (x1 y2 - x2 y1) sin(θ(j-i)) (the sign
checked against Rotary.apply, in both the "half" and the adjacent-pairs layouts).

Pure functions: tensors in, tensors / DataFrames out. Shapes: f_q [batch, n, d_q], f_k
[batch, n, d_k]; scores [batch, n_heads, dest, src]. Modules: `scores` the sparse engine
(masked_scores, pattern_from_features, pair_contributions), `reference` the dense reference for
tests and benchmarks, `explain` the maps, decompose_score and rank_pairs.
"""

from attnviz.analysis.qk._shared import DEFAULT_CHUNK
from attnviz.analysis.qk.explain import (
    ROW_KINDS,
    decompose_score,
    feature_map,
    key_bias_term,
    query_bias_term,
    rank_pairs,
)
from attnviz.analysis.qk.reference import dense_masked_scores
from attnviz.analysis.qk.scores import (
    PairBlock,
    masked_and_bias_scores,
    masked_scores,
    pair_contributions,
    pattern_from_features,
)

__all__ = [
    "DEFAULT_CHUNK",
    "ROW_KINDS",
    "PairBlock",
    "decompose_score",
    "dense_masked_scores",
    "feature_map",
    "key_bias_term",
    "masked_and_bias_scores",
    "masked_scores",
    "pair_contributions",
    "pattern_from_features",
    "query_bias_term",
    "rank_pairs",
]
