"""QK dictionaries: losses, training (falls, resumes exactly), dead features, save / load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnviz.data import collect_activations
from attnviz.dictionaries import PairTable, QKConfig, QKDictionary
from attnviz.dictionaries.io import load_qk, save_qk
from attnviz.errors import CheckpointMismatchError, CorruptFileError, DictionaryMismatchError
from attnviz.training.config import QKTrainConfig
from attnviz.training.dead_features import FiringTracker, ghost_loss, resample
from attnviz.training.qk import QKTrainer, log_pattern, pattern_kl

N_CTX = 32


@pytest.fixture(scope="module")
def store(tiny_llama_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("qk-store")
    return collect_activations(
        tiny_llama_adapter, "pydocs", layer=1, n_tokens=N_CTX * 96, out_dir=out / "store",
        n_ctx=N_CTX, chunk_contexts=24, progress=False,
    )  # fmt: skip


def small_cfg(**overrides) -> QKTrainConfig:
    base = QKTrainConfig(
        d_hidden_q=64, d_hidden_k=64, tokens=N_CTX * 8 * 40, batch_contexts=8, warmup_steps=5,
        eval_every=10, checkpoint_every=7, resample_every=15, dead_window=5, sparsity=1e-3,
    )  # fmt: skip
    return dataclasses.replace(base, **overrides)


def trainer(store, adapter, out, **overrides) -> QKTrainer:
    return QKTrainer(store, adapter.rotary(1, N_CTX), small_cfg(**overrides), out)


def test_kl_is_zero_for_a_perfect_reconstruction_and_positive_otherwise():
    torch.manual_seed(0)
    q, k = torch.randn(2, 10, 4, 8), torch.randn(2, 10, 2, 8)
    logp = log_pattern(q, k, 8**0.5)
    assert pattern_kl(logp, logp).item() == 0.0
    other = log_pattern(q + 0.3 * torch.randn_like(q), k, 8**0.5)
    assert pattern_kl(logp, other).item() > 0


def test_training_lowers_the_pattern_kl(store, tiny_llama_adapter, tmp_path):
    run = trainer(store, tiny_llama_adapter, tmp_path)
    before = run.evaluate()["eval_kl"]
    qk = run.run(progress=False)
    after = run.state.history[-3]["eval_kl"]
    assert after < 0.6 * before, (before, after)
    assert all(p.grad is not None for p in qk.parameters())  # gradients reached every tensor
    # Outputs: the dictionary directory, history and densities.
    loaded = load_qk(tmp_path / "dictionary", spec=tiny_llama_adapter.spec, layer=1)
    assert torch.equal(loaded.query.W_dec, qk.query.W_dec.detach().cpu())
    assert (tmp_path / "history.jsonl").read_text().count("\n") == len(run.state.history)
    # Decoder rows stay at unit norm.
    assert torch.allclose(qk.query.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5)


def test_topk_transcoders_hold_their_l0_and_keep_it_when_loaded(
    store, tiny_llama_adapter, tmp_path
):
    """TopK (Gao et al. 2024) on both sides, with AuxK: every token has at most k active features
    on each side, training still lowers the KL, and k survives save and load."""
    run = trainer(store, tiny_llama_adapter, tmp_path, k_q=3, k_k=5, aux_k=16, ghost_grads=False)
    before = run.evaluate()["eval_kl"]
    qk = run.run(progress=False)
    assert run.state.history[-3]["eval_kl"] < 0.8 * before
    batch = next(iter(store.batches(4, ("resid_normed",), shuffle=False, by="context")))
    f_q, f_k = qk.encode(resid_normed=batch["resid_normed"].float())
    assert int((f_q > 0).sum(-1).max()) <= 3 and int((f_k > 0).sum(-1).max()) <= 5
    assert float((f_q > 0).sum(-1).float().mean()) > 2  # not a dead dictionary either
    # One feature's column (max-activating examples) is 0 wherever it is not among the k largest.
    from attnviz.analysis.feature_examples import _feature_column

    x = batch["resid_normed"].float()
    for j in range(8):
        assert torch.equal(_feature_column(qk.query, x, j), f_q[..., j])
    with pytest.raises(ValueError, match="k_q = 64"):
        small_cfg(k_q=64)
    loaded = load_qk(tmp_path / "dictionary", spec=tiny_llama_adapter.spec, layer=1)
    assert (loaded.cfg.k_q, loaded.cfg.k_k) == (3, 5)
    assert torch.equal(loaded.encode(resid_normed=batch["resid_normed"].float())[1], f_k)


def test_an_interrupted_run_resumes_to_the_same_weights(store, tiny_llama_adapter, tmp_path):
    whole = trainer(store, tiny_llama_adapter, tmp_path / "whole").run(progress=False)
    first = trainer(store, tiny_llama_adapter, tmp_path / "parts")
    first.run(progress=False, stop_after=17)  # past a resampling and mid-epoch
    assert first.state.step == 17
    resumed = trainer(store, tiny_llama_adapter, tmp_path / "parts").run(progress=False)
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_checkpoint_with_other_settings_is_refused(store, tiny_llama_adapter, tmp_path):
    trainer(store, tiny_llama_adapter, tmp_path).run(progress=False, stop_after=3)
    with pytest.raises(CheckpointMismatchError, match="sparsity"):
        trainer(store, tiny_llama_adapter, tmp_path, sparsity=0.5).run(progress=False)


def test_the_l2_baseline_trains_on_q_and_k(store, tiny_llama_adapter, tmp_path):
    run = trainer(store, tiny_llama_adapter, tmp_path, architecture="qk_sae")
    before = run.evaluate()["eval_mse"]
    qk = run.run(progress=False)
    assert run.state.history[-3]["eval_mse"] < 0.7 * before
    assert not qk.is_transcoder and qk.query.d_in == 4 * 16


def test_ghost_loss_reaches_only_dead_features():
    coder = QKDictionary(
        QKConfig("qk_transcoder", "m", 0, 16, 2, 1, 8, "absolute", 8**0.5, 32, 32)
    ).query
    x, residual = torch.randn(20, 16), torch.randn(20, 16)
    nobody = torch.zeros(32, dtype=torch.bool)
    assert ghost_loss(coder, x, residual, nobody).item() == 0.0
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:5] = True
    loss = ghost_loss(coder, x, residual, dead)
    loss.backward()
    assert loss.item() > 0
    assert coder.W_dec.grad[:5].abs().sum() > 0 and coder.W_dec.grad[5:].abs().sum() == 0
    # Rescaled by the dead fraction.
    coder.zero_grad()
    all_dead = torch.ones(32, dtype=torch.bool)
    assert ghost_loss(coder, x, residual, all_dead).item() > loss.item()


def test_resampling_revives_dead_features():
    torch.manual_seed(0)
    cfg = QKConfig("qk_transcoder", "m", 0, 16, 2, 1, 8, "absolute", 8**0.5, 32, 32)
    coder = QKDictionary(cfg).query
    with torch.no_grad():
        coder.b_enc[:8] = -100.0  # features 0-7 never fire
    x = torch.randn(256, 16)
    tracker = FiringTracker(32)
    tracker.update(coder.encode(x))
    dead = tracker.dead(window=1)
    assert dead[:8].all() and not dead[8:].any()
    opt = torch.optim.Adam(coder.parameters())
    n = resample(coder, dead, x, torch.randn(256, 16), opt, torch.Generator().manual_seed(0))
    assert n == 8
    fired = (coder.encode(x) > 0).any(0)
    assert fired[:8].all()
    assert torch.allclose(coder.W_dec[:8].norm(dim=-1), torch.ones(8), atol=1e-5)


def test_save_load_round_trip_is_exact(tmp_path, tiny_llama_adapter):
    cfg = QKConfig.for_model(tiny_llama_adapter.spec, layer=1, d_hidden_q=48, d_hidden_k=40)
    qk = QKDictionary(cfg, seed=3)
    with torch.no_grad():
        for p in qk.parameters():
            p.add_(torch.randn_like(p))
    mask = (torch.rand(48, 40, 4) > 0.97).float() * torch.rand(48, 40, 4)
    qk.pairs = PairTable.from_dense(mask)
    save_qk(qk, tmp_path / "qk")
    loaded = load_qk(tmp_path / "qk", spec=tiny_llama_adapter.spec, layer=1)
    for name, value in qk.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert torch.equal(loaded.pairs.to_dense(), qk.pairs.to_dense())
    assert loaded.cfg == cfg
    # fp16 for shipping: half the bytes, close values.
    save_qk(qk, tmp_path / "qk16", dtype=torch.float16)
    small = (tmp_path / "qk16" / "weights.safetensors").stat().st_size
    assert small < 0.6 * (tmp_path / "qk" / "weights.safetensors").stat().st_size
    assert torch.allclose(
        load_qk(tmp_path / "qk16").query.W_enc, qk.query.W_enc, rtol=1e-2, atol=1e-2
    )


def test_a_dictionary_for_another_model_or_layer_is_refused(tmp_path, tiny_llama_adapter):
    from tests.tiny_models import adapters_for, tiny_gpt2

    qk = QKDictionary(QKConfig.for_model(tiny_llama_adapter.spec, layer=1, d_hidden_q=16))
    save_qk(qk, tmp_path / "qk")
    gpt2 = adapters_for(tiny_gpt2(), "tiny-gpt2")[0]
    with pytest.raises(DictionaryMismatchError, match=r"trained on tiny-llama layer 1.*positional"):
        load_qk(tmp_path / "qk", spec=gpt2.spec)
    with pytest.raises(DictionaryMismatchError, match="not layer 0"):
        load_qk(tmp_path / "qk", spec=tiny_llama_adapter.spec, layer=0)


def test_corrupt_or_missing_files_are_named(tmp_path, tiny_llama_adapter):
    qk = QKDictionary(QKConfig.for_model(tiny_llama_adapter.spec, layer=1, d_hidden_q=16))
    save_qk(qk, tmp_path / "qk")
    weights = tmp_path / "qk" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="truncated"):
        load_qk(tmp_path / "qk")
    with pytest.raises(FileNotFoundError, match="not a dictionary directory"):
        load_qk(tmp_path)


def test_the_pair_mask_keeps_few_pairs_and_the_pattern(tiny_tokenizer, tmp_path):
    from attnviz.analysis.qk import pattern_from_features
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from attnviz.training.mask import MaskTrainConfig, train_pair_mask
    from tests.tiny_models import tiny_llama

    # Peaked patterns, so that which pairs are kept matters.
    adapter = NNsightAdapter(tiny_llama(sharpen=4.0), tiny_tokenizer, "sharp-llama", 0)
    store = collect_activations(
        adapter, "pydocs", layer=1, n_tokens=N_CTX * 96, out_dir=tmp_path / "store",
        n_ctx=N_CTX, chunk_contexts=24, progress=False,
    )  # fmt: skip
    qk = trainer(store, adapter, tmp_path / "qk", sparsity=3e-3).run(progress=False)
    rotary = adapter.rotary(1, N_CTX)
    cfg = MaskTrainConfig(contexts=8, n_ctx=N_CTX, batch_contexts=4, steps=120, lr=2e-2,
                          mask_reg=1e-5)  # fmt: skip
    table = train_pair_mask(qk, store, rotary, tmp_path / "mask", cfg, progress=False)
    d_q, d_k, heads = table.shape
    assert 0 < table.nnz < 0.5 * d_q * d_k * heads
    assert ((table.value > cfg.threshold) & (table.value <= 1)).all()
    batch = next(iter(store.batches(8, ("resid_normed", "q", "k"), shuffle=False, by="context")))
    with torch.no_grad():
        q_hat, k_hat, f_q, f_k = qk(resid_normed=batch["resid_normed"])
        true = log_pattern(rotary.apply(batch["q"]), rotary.apply(batch["k"]), qk.cfg.attn_scale)
        full = log_pattern(rotary.apply(q_hat), rotary.apply(k_hat), qk.cfg.attn_scale)
        masked = pattern_from_features(qk, f_q, f_k, table, rotary).clamp_min(1e-30).log()
        empty = PairTable.from_dense(torch.zeros(table.shape))
        bias_only = pattern_from_features(qk, f_q, f_k, empty, rotary).clamp_min(1e-30).log()
    kl_full, kl_masked = pattern_kl(true, full), pattern_kl(true, masked)
    kl_none = pattern_kl(true, bias_only)
    print(f"KL all pairs {kl_full:.4f}, kept {kl_masked:.4f}, none {kl_none:.4f}, {table.nnz} kept")
    # The kept few carry what the pairs contribute: most of the way from no pairs to all pairs.
    assert kl_masked < kl_none - 0.5 * (kl_none - kl_full)


def test_the_mask_contexts_give_the_masked_scores_for_any_mask(store, tiny_llama_adapter, tmp_path):
    from attnviz.analysis.qk import masked_scores
    from attnviz.training.mask import _context, _scores, candidate_pairs

    qk = trainer(store, tiny_llama_adapter, tmp_path, tokens=N_CTX * 8 * 5).run(progress=False)
    rotary = tiny_llama_adapter.rotary(1, N_CTX)
    batch = next(iter(store.batches(2, ("resid_normed", "q", "k"), shuffle=False, by="context")))
    with torch.no_grad():
        _, _, f_q, f_k = qk(resid_normed=batch["resid_normed"])
    candidates = candidate_pairs(f_q, f_k, qk.cfg.n_heads)
    ctx = _context(qk, f_q[0], f_k[0], batch["q"][0], batch["k"][0], candidates, rotary)
    assert int(ctx.counts.sum()) == ctx.cell.numel() > 0
    mask = torch.rand(candidates.nnz, generator=torch.Generator().manual_seed(0))
    table = dataclasses.replace(candidates, value=mask)
    expected = masked_scores(qk, f_q[:1], f_k[:1], table, rotary, include_row_constants=True)[0]
    got = _scores(ctx, mask)
    causal = torch.ones(N_CTX, N_CTX, dtype=torch.bool).tril()
    torch.testing.assert_close(got[:, causal], expected[:, causal], rtol=1e-4, atol=1e-4)
    assert torch.isinf(got[:, ~causal]).all()


def test_evaluations_record_dead_fractions_and_density_histograms(
    store, tiny_llama_adapter, tmp_path
):
    run = trainer(store, tiny_llama_adapter, tmp_path)
    run.run(progress=False)
    record = next(h for h in run.state.history if "eval_kl" in h)
    hist = record["density_hist_q"]
    assert sum(hist["counts"]) + hist["never_fired"] == 64
    assert 0.0 <= record["dead_q"] <= 1.0
