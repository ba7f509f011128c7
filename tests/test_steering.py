"""Steering analysis on a tiny config-built model: ActAdd's padding and positions, projection,
feature directions, the whole-word counter, a batched sweep equal to the per-coefficient loop
(same seeds), a zero coefficient equal to the unsteered rollouts, damage that is zero at zero,
and the Pareto frontier of a sweep."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from attnviz.analysis.steering import (
    actadd,
    damage,
    distinct_n,
    feature_direction,
    from_tensor,
    frontier,
    mean_difference,
    padding_features,
    project_out,
    residual_norm,
    rollouts,
    success_rate,
    sweep,
    word_matcher,
    z_direction,
    zlib_ratio,
)
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.models.generation import GREEDY, generate
from tests.helpers import TEXT


@pytest.fixture(scope="module")
def model(tiny_llama_adapter):
    return tiny_llama_adapter


@pytest.fixture(scope="module")
def resid_sae(model):
    torch.manual_seed(0)
    return SAE(SAEConfig.for_model(model.spec, "resid_pre", 1, 64))


def test_actadd_pads_the_shorter_prompt_with_spaces_and_steers_the_front(model):
    v = actadd(model, "The cat sat on the mat", "Dogs", layer=1)
    a = model.to_tokens("The cat sat on the mat")
    assert v.positions == list(range(a.shape[1])) and v.vectors.shape == (
        a.shape[1],
        model.spec.d_model,
    )
    assert torch.allclose(v.vectors[0], torch.zeros(model.spec.d_model), atol=1e-5)  # BOS vs BOS
    space = model.tokenizer(" ", add_special_tokens=False)["input_ids"][0]
    b = model.to_tokens("Dogs")
    padded = torch.cat([b[0], b.new_full((a.shape[1] - b.shape[1],), space)])[None]
    ra = model.attention(a, 1, ["resid_pre"]).resid_pre[0]
    rb = model.attention(padded, 1, ["resid_pre"]).resid_pre[0]
    assert torch.allclose(v.vectors, (ra - rb).float(), atol=1e-5)
    # added at exactly those positions: the logits of the positions before the last change
    tokens = model.to_tokens(TEXT)
    plain, steered = model.run(tokens), model.run(tokens, v.interventions(3.0))
    assert not torch.allclose(plain[:, : a.shape[1]], steered[:, : a.shape[1]])
    with pytest.raises(ValueError, match="one token"):
        actadd(model, "a", "b", 1, pad="two words")


def test_projection_removes_exactly_the_span(model, resid_sae):
    v = mean_difference(model, ["The cat sat", "A dog ran"], ["The mat", "It was"], layer=1)
    d = resid_sae.W_dec[:3].detach()
    out = project_out(v, d, "three features")
    assert torch.allclose(out.vectors @ d.T, torch.zeros(1, 3), atol=1e-4)
    q, _ = torch.linalg.qr(d.T)
    assert torch.allclose(v.vectors - out.vectors, (v.vectors @ q) @ q.T, atol=1e-5)
    assert "three features projected out" in out.name


def test_feature_directions_and_their_errors(model, resid_sae):
    f = feature_direction(resid_sae, 5)
    assert f.layer == 1 and f.norm == pytest.approx(1.0)
    assert torch.allclose(
        f.vectors[0] * resid_sae.W_dec[5].norm(), resid_sae.W_dec[5].detach(), atol=1e-6
    )
    with pytest.raises(ValueError, match="out of range"):
        feature_direction(resid_sae, 64)
    z = SAE(SAEConfig.for_model(model.spec, "z", 1, 16))
    with pytest.raises(ValueError, match="model="):
        feature_direction(z, 0)
    with pytest.raises(ValueError, match="heads="):
        feature_direction(resid_sae, 0, heads=2)
    recon = actadd(model, "The cat", "Dogs", 1, sae=resid_sae)
    assert recon.name.startswith("SAE reconstruction") and recon.vectors.shape[0] == 3
    ids = padding_features(model, resid_sae, top=4)
    assert 0 < len(ids) <= 4
    with pytest.raises(ValueError, match=r"\[d_model\]"):
        from_tensor(torch.zeros(2, 3), 1)


def test_whole_words_ignoring_case():
    hit = word_matcher(["wed", "bride"])
    assert hit("They WED in May") and hit("the bride.") and hit("wed")
    assert not hit("Wednesday") and not hit("bridesmaid") and not hit("newed")
    with pytest.raises(ValueError, match="empty"):
        word_matcher([" ", ""])
    p, lo, hi = success_rate(["wed", "no", "no", "no"], hit)
    assert p == 0.25 and 0 < lo < 0.25 < hi < 1
    assert distinct_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(2 / 5)
    assert zlib_ratio("ab" * 200) < zlib_ratio("The quick brown fox jumps over the lazy dog.")
    assert math.isnan(zlib_ratio(""))


def test_a_batched_sweep_equals_the_loop_and_zero_is_unsteered(model):
    v = mean_difference(model, ["The cat sat"], ["It was"], layer=1)
    coefs = [0.0, 2.0, -4.0]
    batched = rollouts(model, v, coefs, TEXT, n_rollouts=3, n_new=6, seed=5)
    looped = rollouts(model, v, coefs, TEXT, n_rollouts=3, n_new=6, seed=5, batched=False)
    assert torch.equal(batched, looped)
    plain = rollouts(model, None, [0.0], TEXT, n_rollouts=3, n_new=6, seed=5)
    assert torch.equal(batched[0], plain[0])
    small = rollouts(model, v, coefs, TEXT, n_rollouts=3, n_new=6, seed=5, batch_rows=4)
    assert torch.equal(small, batched)  # split into batches of 4 rows: the same tokens
    one = generate(model, model.to_tokens(TEXT), 6, v.interventions(2.0), seeds=[6])
    assert torch.equal(batched[1, 1], one[0, -6:])  # rollout 1 of coefficient 2: seed 5 + 1


def test_sweep_table_damage_and_frontier(model):
    v = mean_difference(model, ["The cat sat"], ["It was"], layer=1)
    words = [model.to_str_tokens(t)[0].strip() for t in range(40, 60)]
    words = [w for w in words if w.isalpha()] or ["the"]
    s = sweep(model, v, [0.0, 1.0, 8.0], TEXT, words, n_rollouts=4, n_new=8,
              resid_norm=residual_norm(model, 1, model.to_tokens(TEXT)))  # fmt: skip
    assert list(s.table.coef) == [0.0, 1.0, 8.0] and len(s.texts[2]) == 4
    hit = word_matcher(words)
    assert s.table.p_success.tolist() == [sum(map(hit, t)) / 4 for t in s.texts]
    assert (s.table.p_lo <= s.table.p_success).all() and (s.table.p_success <= s.table.p_hi).all()
    assert s.table.relative.iloc[0] == 0 and s.table.relative.iloc[2] > s.table.relative.iloc[1]
    held = model.to_tokens([TEXT, TEXT.replace("cat", "dog")])
    d = damage(model, v, [0.0, 1.0, 8.0], held, batch=1)
    assert d.loss_increase.iloc[0] == pytest.approx(0, abs=1e-6) and d.kl.iloc[0] == pytest.approx(
        0, abs=1e-6
    )
    assert d.kl.iloc[2] > d.kl.iloc[1] > 0
    front = v.at(slice(0, 3))
    with pytest.raises(ValueError, match="no position after"):
        damage(model, front, [1.0], held[:, :3])
    table = pd.DataFrame({"p_success": [0.1, 0.5, 0.4, 0.9], "loss_increase": [0.0, 0.1, 0.2, 0.5]})
    assert frontier(table).index.tolist() == [0, 1, 3]
    # greedy decoding is deterministic whatever the seed
    g = rollouts(model, v, [1.0], TEXT, n_rollouts=2, n_new=4, sampling=GREEDY)
    assert torch.equal(g[0, 0], g[0, 1])


def test_a_z_feature_steers_through_its_top_loading_heads(model):
    torch.manual_seed(1)
    z = SAE(SAEConfig.for_model(model.spec, "z", 1, 16))
    s = model.spec
    row = z.W_dec[3].detach().reshape(s.n_heads, s.d_head)
    top = int(row.norm(dim=-1).argmax())
    one = z_direction(model, z, 3, heads=1)
    blocks = one.vectors.reshape(s.n_heads, s.d_head)
    assert one.site == "z" and f"heads {top}" in one.name
    assert torch.count_nonzero(blocks.norm(dim=-1)) == 1 and blocks[top].norm() > 0
    assert one.norm == pytest.approx(1.0, abs=1e-5)  # unit write to the residual stream
    every = feature_direction(z, 3, model=model)
    assert "all heads" in every.name and every.norm == pytest.approx(1.0, abs=1e-5)
    tokens = model.to_tokens(TEXT)
    assert not torch.allclose(model.run(tokens), model.run(tokens, one.interventions(8.0)))
    ids = rollouts(model, one, [0.0, 8.0], "The cat", n_rollouts=2, n_new=4)
    assert torch.equal(ids[0], rollouts(model, None, [0.0], "The cat", n_rollouts=2, n_new=4)[0])
    with pytest.raises(ValueError, match="heads"):
        z_direction(model, z, 3, heads=[s.n_heads])
    with pytest.raises(ValueError, match="residual-stream"):
        project_out(one, torch.zeros(1, s.d_model))
