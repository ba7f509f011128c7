"""The shared training loop: dead-feature remedies and several processes (torchrun, gloo)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnviz.data import collect_activations
from attnviz.training.config import QKTrainConfig
from attnviz.training.qk import QKTrainer

N_CTX = 32
SCRIPT = Path(__file__).parent / "scripts" / "train_distributed.py"


@pytest.fixture(scope="module")
def store(tiny_llama_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("loop-store")
    return collect_activations(
        tiny_llama_adapter, "pydocs", layer=1, n_tokens=N_CTX * 96, out_dir=out / "store",
        n_ctx=N_CTX, chunk_contexts=24, progress=False,
    )  # fmt: skip


def last_eval(trainer: QKTrainer) -> dict:
    return [h for h in trainer.state.history if "eval_kl" in h][-1]


def test_negative_pre_activation_penalty_keeps_features_alive(store, tiny_llama_adapter, tmp_path):
    # A sparsity push strong enough to kill most features within 200 steps, no other remedy.
    harsh = QKTrainConfig(
        d_hidden_q=256, d_hidden_k=256, tokens=N_CTX * 8 * 200, batch_contexts=8, lr=1e-2,
        sparsity=3e-2, warmup_steps=5, eval_every=200, checkpoint_every=0, resample_every=0,
        dead_window=20, ghost_grads=False,
    )  # fmt: skip
    rotary = tiny_llama_adapter.rotary(1, N_CTX)
    without = QKTrainer(store, rotary, harsh, tmp_path / "without")
    without.run(progress=False)
    penalised = dataclasses.replace(harsh, neg_pre_penalty=1e-3)
    with_penalty = QKTrainer(store, rotary, penalised, tmp_path / "with")
    with_penalty.run(progress=False)
    a, b = last_eval(without), last_eval(with_penalty)
    print(
        f"dead q/k without {a['dead_q']:.2f}/{a['dead_k']:.2f}, with {b['dead_q']:.2f}/{b['dead_k']:.2f}"
    )
    assert a["dead_q"] + a["dead_k"] > 0.5  # the setting really kills features
    assert b["dead_q"] + b["dead_k"] < 0.25 * (a["dead_q"] + a["dead_k"])
    assert b["eval_l0_q"] < 20 and b["eval_l0_k"] < 20  # and the code stays sparse


def test_two_processes_follow_one_process_with_the_same_global_batch(
    store, tiny_llama_adapter, tmp_path
):
    # Ghost grads normalise by their shard's residual, so they are off here (see distributed.py);
    # resampling is on and must make the same choice in both runs.
    cfg = QKTrainConfig(
        d_hidden_q=48, d_hidden_k=48, tokens=N_CTX * 8 * 24, batch_contexts=8, warmup_steps=4,
        eval_every=4, checkpoint_every=10, resample_every=9, dead_window=3, sparsity=3e-3,
        ghost_grads=False, neg_pre_penalty=1e-4,
    )  # fmt: skip
    rotary = tiny_llama_adapter.rotary(1, N_CTX)
    one = QKTrainer(store, rotary, cfg, tmp_path / "one", device="cpu")
    start = {k: v.clone() for k, v in one.dictionary.state_dict().items()}
    one.run(progress=False)

    tables = tmp_path / "rotary.pt"
    torch.save(
        {"cos": rotary.cos, "sin": rotary.sin, "adjacent_pairs": rotary.adjacent_pairs}, tables
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(SCRIPT), str(store.path), str(tables), json.dumps(cfg.to_dict()), str(tmp_path / "two"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    history = [
        json.loads(line) for line in (tmp_path / "two" / "history.jsonl").read_text().splitlines()
    ]
    assert len(history) == len(one.state.history)
    evals = [(h, g) for h, g in zip(one.state.history, history, strict=True) if "eval_kl" in h]
    assert len(evals) == 6  # the curve, step by step
    for mine, theirs in evals:
        assert mine["step"] == theirs["step"]
        # Two processes add gradients in another order than one; over 20 steps with resampling
        # that drifts by ~2e-4 relative on some CPUs (a wrong split is off by far more).
        for key in ("train_loss", "eval_loss", "eval_kl"):
            assert theirs[key] == pytest.approx(mine[key], rel=1e-3), (mine["step"], key)
        # L0 and dead fractions count activations above zero: float noise may flip a handful.
        for key in ("eval_l0_q", "eval_l0_k"):
            assert theirs[key] == pytest.approx(mine[key], rel=3e-3), (mine["step"], key)
        for key in ("dead_q", "dead_k"):
            assert theirs[key] == pytest.approx(mine[key], abs=0.02), (mine["step"], key)
    final = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    # Adam divides by the gradient's running size, so where a gradient is ~0 float noise can flip
    # a step: the runs end within a small fraction of the distance training moved the weights.
    for name, value in one.dictionary.state_dict().items():
        moved = (value - start[name]).norm()
        gap = (final[name] - value).norm()
        print(f"{name}: moved {moved:.3g}, runs differ by {gap:.3g}")
        assert gap < 0.05 * moved, name


def test_a_held_out_chunk_smaller_than_a_batch_is_still_evaluated(tiny_llama_adapter, tmp_path):
    # 2 full chunks of 24 contexts and a last one of 5: smaller than a batch of 8.
    small = collect_activations(
        tiny_llama_adapter, "pydocs", layer=1, n_tokens=N_CTX * 53, out_dir=tmp_path / "store",
        n_ctx=N_CTX, chunk_contexts=24, progress=False,
    )  # fmt: skip
    assert small.chunks[-1].n_contexts < 8
    cfg = QKTrainConfig(d_hidden_q=16, d_hidden_k=16, tokens=N_CTX * 8 * 2, batch_contexts=8)
    record = QKTrainer(small, tiny_llama_adapter.rotary(1, N_CTX), cfg, tmp_path / "r").evaluate()
    assert record["eval_kl"] > 0 and record["eval_l0_q"] > 0


def test_auxk_gives_only_dead_features_a_gradient_towards_the_error():
    from attnviz.dictionaries.sparse_coder import SparseCoder
    from attnviz.training.dead_features import auxk_loss

    coder = SparseCoder(8, 6, 8, seed=0, input_bias="tied")
    x = torch.randn(32, 8)
    dead = torch.tensor([False, True, False, True, True, False])
    # The error is exactly what dead feature 3 writes when it fires at its pre-activation.
    with torch.no_grad():
        coder.b_pre.zero_()
        coder.b_enc.zero_()
        coder.W_enc.zero_()
        coder.W_enc[0, 3] = 1.0
        x[:, 0] = x[:, 0].abs() + 0.1
    residual = x[:, :1] * coder.W_dec[3].detach()
    assert auxk_loss(coder, x, residual, dead, k_aux=1).item() < 1e-10
    coder.zero_grad()
    loss = auxk_loss(coder, x, torch.randn(32, 8), dead, k_aux=2)
    loss.backward()
    grads = coder.W_dec.grad.norm(dim=-1)
    assert torch.all(grads[~dead] == 0) and torch.all(grads[dead] >= 0) and grads[dead].sum() > 0
    assert auxk_loss(coder, x, residual, torch.zeros(6, dtype=torch.bool), 4).item() == 0.0
