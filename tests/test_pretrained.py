"""The QK transcoders shipped for the embedded model are real, trained and fit it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnviz.analysis.qk import pattern_from_features
from attnviz.dictionaries.pretrained import list_pretrained, load_pretrained_qk
from attnviz.training.qk import pattern_kl

pytestmark = pytest.mark.slow

SHIPPED_LAYERS = [3, 15, 25]
TEXT = (
    "The with statement is used to wrap the execution of a block with methods defined by a "
    "context manager. This allows common try, except, finally usage patterns to be encapsulated."
)


def test_three_depths_are_shipped_in_fp16_with_pair_tables():
    rows = [r for r in list_pretrained() if r["architecture"] == "qk_transcoder"]
    assert sorted(r["layer"] for r in rows) == SHIPPED_LAYERS
    for r in rows:
        cfg = json.loads((Path(r["path"]) / "cfg.json").read_text())
        assert cfg["weights_dtype"] == "float16" and r["pairs"]


@pytest.mark.parametrize("layer", SHIPPED_LAYERS)
def test_shipped_transcoders_rebuild_the_pattern(smollm2, layer):
    qk = load_pretrained_qk("smollm2-135m", layer)
    qk.check_compatible(smollm2.spec, layer)
    tokens = smollm2.to_tokens(TEXT)
    acts = smollm2.attention(tokens, layer, ["resid_normed", "q", "k", "pattern"])
    rotary = smollm2.rotary(layer, tokens.shape[1])
    with torch.no_grad():
        q_hat, k_hat, f_q, f_k = qk(resid_normed=acts.resid_normed)
        true = acts.pattern.clamp_min(1e-30).log()
        true = true.masked_fill(acts.pattern == 0, float("-inf"))
        recon = smollm2.pattern_from_qk(q_hat, k_hat, layer).clamp_min(1e-30).log()
        masked = pattern_from_features(qk, f_q, f_k, qk.pairs, rotary).clamp_min(1e-30).log()
    uniform = torch.tril(torch.ones_like(acts.pattern[0, 0]))
    uniform = (uniform / uniform.sum(-1, keepdim=True)).log().expand_as(true)
    kl_recon, kl_masked, kl_uniform = (pattern_kl(true, x) for x in (recon, masked, uniform))
    # Trained, not random: far closer to the true pattern than a uniform one.
    assert kl_recon < 0.5 * kl_uniform
    assert kl_masked < 0.5 * kl_uniform
    # Sparse: few features per token, few pairs kept.
    assert (f_q > 0).float().sum(-1).mean() <= 40 and (f_k > 0).float().sum(-1).mean() <= 40
    assert qk.pairs.fraction_kept < 0.01


def test_an_unshipped_layer_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match=r"qk-transcoder-L3.*attnviz train qk"):
        load_pretrained_qk("smollm2-135m", 7)
