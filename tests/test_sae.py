"""Sparse autoencoders: architectures, the SAELens format both ways (with the real sae_lens),
training through the shared loop, the first-use check, and exact direct feature attribution."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from attnviz.analysis.dfa import edge_features, feature_attribution, head_writes
from attnviz.analysis.sae_check import verify_on_model
from attnviz.data import collect_activations
from attnviz.dictionaries import load_dictionary, save_dictionary
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.errors import DictionaryMismatchError
from attnviz.training.config import SAETrainConfig
from attnviz.training.sae import SAETrainer

N_CTX = 32
TEXT = "When Mary and John went to the store, John gave a drink to Mary. When Mary and John"


@pytest.fixture(scope="module")
def store(tiny_llama_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae-store")
    return collect_activations(
        tiny_llama_adapter, "pydocs", layer=1, n_tokens=N_CTX * 96, out_dir=out / "store",
        fields=("z", "v"), n_ctx=N_CTX, chunk_contexts=24, progress=False,
    )  # fmt: skip


def held_out(store) -> dict:
    """The store's last chunk (never trained on), as one batch of contexts."""
    last = len(store.chunks) - 1
    return next(
        iter(store.batches(24, ("tokens", "z"), shuffle=False, by="context", chunks=[last]))
    )


def small_cfg(**overrides) -> SAETrainConfig:
    base = SAETrainConfig(
        site="z", d_sae=128, tokens=N_CTX * 8 * 60, batch_contexts=8, warmup_steps=5, lr=3e-3,
        eval_every=10, checkpoint_every=7, resample_every=15, dead_window=5, sparsity=0.05, k=16,
    )  # fmt: skip
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    """One trained SAE per architecture (standard, topk, batchtopk saved as jumprelu)."""
    out = tmp_path_factory.mktemp("sae-runs")
    return {
        arch: SAETrainer(store, small_cfg(architecture=arch), out / arch).run(progress=False)
        for arch in ("standard", "topk", "batchtopk")
    }


def test_training_lowers_the_error_and_keeps_the_code_sparse(store, tmp_path):
    run = SAETrainer(store, small_cfg(), tmp_path)
    before = run.evaluate()["eval_fvu"]
    run.run(progress=False)
    last = [h for h in run.state.history if "eval_fvu" in h][-1]
    assert last["eval_fvu"] < 0.5 and before > 1.0, (before, last["eval_fvu"])
    assert last["eval_l0_sae"] < 0.5 * 128


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_topk_and_batchtopk_hold_their_l0(store, trained, arch):
    sae = trained[arch]
    x = held_out(store)["z"][:, 1:].float()
    l0 = (sae.encode(x) > 0).float().sum(-1).mean().item()
    if arch == "topk":
        assert sae.cfg.architecture == "topk" and l0 <= 16
    else:  # the saved threshold reproduces roughly the batch-level budget, per token
        assert sae.cfg.architecture == "jumprelu" and 8 <= l0 <= 32, l0


def test_subspace_init_draws_directions_inside_the_inputs_active_subspace(store, tmp_path):
    """z of a tiny model with 2 kv heads under 4 query heads fills part of its width: subspace
    initialisation puts every decoder row (and the tied encoder column) inside the span of the
    principal directions holding 99% of the variance; random rows stick out of it."""
    first = list(range(min(4, len(store.chunks) - 1)))  # what the trainer measures them on
    batches = store.batches(8, ("z",), shuffle=False, by="context", chunks=first)
    x = torch.cat([b["z"][:, 1:].float().flatten(0, 1).flatten(1) for b in batches])
    x = x - x.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(x.T.double() @ x.double() / len(x))
    order = eigenvalues.flip(0)
    rank = int((order.cumsum(0) / order.sum() < 0.99).sum()) + 1
    assert rank < x.shape[1]  # the premise: a subspace, not the whole width
    outside = eigenvectors.flip(1)[:, rank:].float()

    def stick_out(rows):
        return float((rows @ outside).norm(dim=-1).mean())

    fresh = SAETrainer(store, small_cfg(architecture="topk", init="subspace"), tmp_path / "s")
    plain = SAETrainer(store, small_cfg(architecture="topk"), tmp_path / "r")
    assert stick_out(fresh.sae.W_dec.detach()) < 1e-3 and stick_out(plain.sae.W_dec.detach()) > 0.3
    assert torch.equal(fresh.sae.W_enc.detach(), fresh.sae.W_dec.detach().T)
    assert torch.allclose(fresh.sae.W_dec.norm(dim=-1), torch.ones(128), atol=1e-5)
    with pytest.raises(ValueError, match="init"):
        small_cfg(init="pca")


def test_an_interrupted_run_resumes_to_the_same_weights(store, tmp_path):
    whole = SAETrainer(store, small_cfg(architecture="batchtopk"), tmp_path / "whole").run(
        progress=False
    )
    first = SAETrainer(store, small_cfg(architecture="batchtopk"), tmp_path / "parts")
    first.run(progress=False, stop_after=17)
    resumed = SAETrainer(store, small_cfg(architecture="batchtopk"), tmp_path / "parts").run(
        progress=False
    )
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk"])
def test_saelens_loads_what_attnviz_writes_and_the_reverse(trained, tmp_path, arch):
    from sae_lens import SAE as LensSAE

    ours = trained[arch]
    save_dictionary(ours, tmp_path / "ours")
    lens = LensSAE.load_from_disk(str(tmp_path / "ours"))
    assert lens.cfg.metadata.hook_name == "blocks.1.attn.hook_z"
    assert lens.cfg.reshape_activations == "hook_z"
    z = torch.randn(3, 11, 4, 16)  # [batch, pos, heads, d_head], as hook_z comes
    with torch.no_grad():
        assert torch.allclose(lens.encode(z), ours.encode(z), atol=1e-5)
        assert torch.allclose(lens.decode(lens.encode(z)), ours.reconstruct(z), atol=1e-5)
        # ... and back: a directory SAELens wrote loads in attnviz with the same map.
        lens.save_model(str(tmp_path / "lens"))
    back = load_dictionary(tmp_path / "lens")
    assert isinstance(back, SAE) and (back.cfg.site, back.cfg.layers) == ("z", [1])
    assert back.cfg.model == "tiny-llama"
    with torch.no_grad():
        assert torch.allclose(back.encode(z), lens.encode(z), atol=1e-5)
        assert torch.allclose(back.reconstruct(z), lens.decode(lens.encode(z)), atol=1e-5)


def test_a_saelens_config_without_a_hook_name_is_a_clear_error(trained, tmp_path):
    save_dictionary(trained["standard"], tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    for key in ("site", "layers", "model"):
        del cfg[key]
    cfg["metadata"]["hook_name"] = None
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DictionaryMismatchError, match=r"metadata\.hook_name"):
        load_dictionary(tmp_path / "sae")


def test_the_first_use_check_refuses_an_sae_for_another_site(trained, tiny_llama_adapter, store):
    sae = trained["standard"]
    tokens = held_out(store)["tokens"][:8].long()
    assert verify_on_model(sae, tiny_llama_adapter, tokens) < 0.5
    # The same weights filed as an SAE of layer 0's hook_z: right shape, wrong activations.
    cfg = dataclasses.replace(sae.cfg, layers=[0])
    impostor = SAE(cfg)
    impostor.load_state_dict(sae.state_dict())
    with pytest.raises(DictionaryMismatchError, match=r"z of layer\(s\) \[0\].*FVU"):
        verify_on_model(impostor, tiny_llama_adapter, tokens)
    # A v-sized SAE cannot even pretend to be a z SAE.
    wrong = SAE(SAEConfig.for_model(tiny_llama_adapter.spec, "v", 1, 32))
    wrong.cfg.site = "z"
    with pytest.raises(DictionaryMismatchError, match="width at z 32 vs 64"):
        verify_on_model(wrong, tiny_llama_adapter)


def test_dfa_cells_add_up_to_the_pre_activation_exactly(trained, tiny_llama_adapter):
    sae = trained["standard"]
    tokens = tiny_llama_adapter.to_tokens(TEXT)
    acts = tiny_llama_adapter.attention(tokens, 1, ["pattern", "v", "z"])
    pattern, v, z = acts.pattern[0], acts.v[0], acts.z[0]
    # The tiny Llama shares each of 2 kv heads between 2 query heads (GQA).
    assert pattern.shape[0] == 4 and v.shape[1] == 2
    dest = tokens.shape[1] - 5  # mid-prompt, so there are future cells to check
    features = torch.arange(sae.cfg.d_sae)
    dfa = feature_attribution(sae, pattern, v, dest, features)
    with torch.no_grad():
        pre = sae.pre_activation(z[dest])
    assert torch.allclose(dfa.pre_activation, pre, atol=1e-5)
    assert dfa.cells[:, :, dest + 1 :].abs().max() == 0  # no attention to the future
    # A GQA mistake (every query head reading kv head 0) would not add up.
    wrong = feature_attribution(sae, pattern, v[:, [0, 0]], dest, features)
    assert not torch.allclose(wrong.pre_activation, pre, atol=1e-3)
    # The reverse view: what head 2 writes is its row of the cells, for every feature.
    assert torch.allclose(head_writes(sae, pattern, v, dest, 2), dfa.by_head[:, 2], atol=1e-5)
    # One edge: the listed contributions are that edge's cells.
    ids, contribution, whole = edge_features(sae, pattern, v, dest, head=3, src=4, top=5)
    assert torch.allclose(contribution, dfa.cells[ids, 3, 4], atol=1e-6)
    assert torch.allclose(whole, pre[ids], atol=1e-5)


def test_per_head_decoder_view(tiny_llama_adapter):
    cfg = SAEConfig.for_model(tiny_llama_adapter.spec, "z", 1, 8)
    sae = SAE(cfg)
    heads = sae.dec_heads
    assert heads.shape == (8, 4, 16)
    assert torch.equal(heads[3, 2], sae.W_dec[3, 32:48])
    two = SAE(SAEConfig.for_model(tiny_llama_adapter.spec, "v", [0, 1], 8))
    assert two.dec_heads.shape == (8, 2, 2, 16) and two.cfg.d_in == 64


@pytest.mark.slow
def test_the_shipped_saes_fit_the_embedded_model(smollm2):
    from attnviz.dictionaries.pretrained import list_pretrained

    shipped = [
        r
        for r in list_pretrained("smollm2-135m")
        if r["architecture"] in ("topk", "jumprelu", "standard")
    ]
    sites = {(r["site"], r["layer"]) for r in shipped}
    assert {("z", 2), ("z", 16), ("z", 18), ("resid_pre", 16)} <= sites
    for row in shipped:
        sae = load_dictionary(row["path"], model=smollm2)
        assert row["dtype"] == "float16" and sae.cfg.training.get("chosen_because")
        assert verify_on_model(sae, smollm2) < 1.0, row["name"]  # better than the mean, first use
    # Filed under another layer, a shipped SAE is refused on first use.
    early = load_dictionary(next(r["path"] for r in shipped if r["name"] == "z-sae-L2"))
    early.cfg.layers = [16]
    with pytest.raises(DictionaryMismatchError, match="FVU"):
        verify_on_model(early, smollm2)
