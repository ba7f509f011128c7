"""remote=True (nnsight on NDIF): offline it fails at once, naming the problem and the fix; where
NDIF is usable, every trace of a steering sweep is sent remotely and the results are those of the
local run (checked by running the 'remote' traces here, as NDIF would run them)."""

from __future__ import annotations

import time

import pytest
import torch

import attnviz
from attnviz.analysis.steering import from_tensor, rollouts
from attnviz.errors import RemoteUnavailableError
from attnviz.models.nnsight_adapter import NNsightAdapter
from tests.tiny_models import smollm2_tokenizer, tiny_llama


@pytest.fixture
def closed_ndif(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", "http://127.0.0.1:9")  # nothing listens there


def test_offline_remote_fails_at_once_with_the_fix(closed_ndif):
    start = time.perf_counter()
    with pytest.raises(RemoteUnavailableError, match=r"cannot be reached.*remote=False"):
        attnviz.load_model(backend="nnsight", remote=True)
    with pytest.raises(RemoteUnavailableError, match=r"127\.0\.0\.1"):
        NNsightAdapter(tiny_llama(), smollm2_tokenizer(), "tiny", remote=True)
    assert time.perf_counter() - start < 10
    with pytest.raises(ValueError, match="backend='nnsight'"):
        attnviz.load_model(backend="transformer_lens", remote=True)


def test_remote_without_an_api_key_says_so(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr("attnviz.hub.reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(RemoteUnavailableError, match="API key"):
        NNsightAdapter(tiny_llama(), smollm2_tokenizer(), "tiny", remote=True)


def test_a_remote_sweep_sends_every_trace_remotely_and_matches_local(monkeypatch):
    monkeypatch.setattr("attnviz.models.nnsight_adapter.ndif_problem", lambda: None)
    hf, tok = tiny_llama(seed=2), smollm2_tokenizer()
    local = NNsightAdapter(hf, tok, "tiny", bos_token_id=0)
    remote = NNsightAdapter(hf, tok, "tiny", bos_token_id=0, remote=True)
    asked: list[bool] = []
    trace = remote.lm.trace

    def as_ndif_would(*args, remote=False, **kwargs):
        asked.append(remote)
        return trace(*args, **kwargs)  # run here what NDIF would run

    remote.lm.trace = as_ndif_would
    v = from_tensor(
        torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(0)), 1
    )
    want = rollouts(local, v, [0.0, 6.0], "The cat sat", n_rollouts=2, n_new=5)
    got = rollouts(remote, v, [0.0, 6.0], "The cat sat", n_rollouts=2, n_new=5)
    assert torch.equal(got, want)
    assert asked and all(asked)  # every step went through a remote trace (no local KV cache)
    with pytest.raises(RemoteUnavailableError, match="weights"):
        remote.qk_weights(0)
