"""SAE metrics on held-out text: L0, FVU, density, CE recovered with intervals, head attribution."""

from __future__ import annotations

import pytest
import torch

from attnviz.analysis.sae_report import evaluate_sae, head_attribution
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.training.sae import SAETrainer
from tests.test_sae import held_out, small_cfg, store  # noqa: F401  (the module's store fixture)


@pytest.fixture(scope="module")
def sae(store, tmp_path_factory):  # noqa: F811
    return SAETrainer(store, small_cfg(architecture="topk"), tmp_path_factory.mktemp("r")).run(
        progress=False
    )


def test_a_trained_sae_reports_honest_figures(sae, store, tiny_llama_adapter):  # noqa: F811
    tokens = held_out(store)["tokens"].long()
    report = evaluate_sae(tiny_llama_adapter, sae, [tokens[:12], tokens[12:]])
    assert report.n_tokens == 24 * 31  # BOS left out
    assert 0 < report.l0 <= 16 and 0 < report.fvu < 0.6
    assert report.density.shape == (128,) and 0 <= report.dead_fraction <= 1
    row = report.summary()
    for ablation in ("zero", "mean"):
        ce = report.ce[ablation]
        lo, hi = ce.ablation_damage_interval
        assert lo <= ce.ablation_damage <= hi
        # A random tiny model barely uses its attention output: the ratio is flagged, not trusted.
        assert abs(ce.ablation_damage) < 0.05 and ce.unreliable and row[f"ce_{ablation}_warning"]
    assert row["loss_increase_lo"] <= row["loss_increase"] <= row["loss_increase_hi"]
    assert abs(row["loss_increase"]) < 0.05


def test_head_attribution_of_features_that_live_on_one_head_is_one_hot(tiny_llama_adapter):
    cfg = SAEConfig.for_model(tiny_llama_adapter.spec, "z", 1, 8)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.coder.W_dec.zero_()
        for f in range(8):
            head = f % 4
            sae.coder.W_dec[f, head * 16 : (head + 1) * 16] = torch.randn(16)
    share = head_attribution(sae)
    assert torch.equal(share, torch.nn.functional.one_hot(torch.arange(8) % 4, 4).float())
    mixed = SAE(cfg)
    total = head_attribution(mixed, squared=True).sum(-1)
    assert torch.allclose(total, torch.ones(8))
