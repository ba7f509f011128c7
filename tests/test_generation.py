"""Generation with steering on tiny config-built models, on both backends: the KV-cached path
equals rerunning the whole sequence (steering held on every cached step, positions counted from
the sequence's start), a zero vector changes nothing, rows do not depend on their batch, and
steering changes activations only from its layer on."""

from __future__ import annotations

import pytest
import torch

from attnviz.models.adapter import positions_index
from attnviz.models.generation import GREEDY, Sampling, generate, sample_next
from attnviz.models.interventions import AddToResidual, AddToZ, Splice
from tests.tiny_models import adapters_for, tiny_gpt2, tiny_llama

PROMPT = [[0, 5, 17, 99, 4, 61]]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def backends(request):
    """(TransformerLens adapter, nnsight adapter) over the same tiny weights."""
    model = tiny_llama(seed=1) if request.param == "llama" else tiny_gpt2(seed=1)
    return adapters_for(model, f"tiny-{request.param}")


def steer(model, scale: float = 4.0, positions=None, layer: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.spec.d_model, generator=g)
    return AddToResidual(layer, scale * v / v.norm() * 4, positions)


def steer_z(model, scale: float = 4.0, positions=None, layer: int = 1, heads=(0, 2)):
    s = model.spec
    v = torch.randn(s.n_heads, s.d_head, generator=torch.Generator().manual_seed(5))
    keep = torch.zeros(s.n_heads, 1)
    keep[list(heads)] = 1
    return AddToZ(layer, (scale * v * keep).flatten(), positions)


def test_positions_count_from_the_sequence_start():
    assert positions_index(None, 7, 1) == slice(None)
    assert positions_index(slice(0, 3), 0, 6) == slice(0, 3)
    assert positions_index(slice(0, 3), 6, 1) is None  # the front positions: not on later steps
    assert positions_index(slice(4, None), 6, 1) == slice(0, 1)  # from 4 on: every later step
    assert positions_index(slice(4, None), 2, 4) == slice(2, 4)
    assert positions_index([1, 7, 9], 7, 2) == [0]
    assert positions_index([1, 2], 5, 1) is None


@pytest.mark.parametrize("positions", [None, slice(0, 3), slice(4, None), [2, 7, 9]])
def test_cached_generation_equals_rerunning_the_sequence(backends, positions):
    for model in backends:
        iv = steer(model, positions=positions)
        cached = generate(model, PROMPT, 8, [iv], GREEDY)
        full = generate(model, PROMPT, 8, [iv], GREEDY, use_cache=False)
        assert torch.equal(cached, full), (model.backend, positions)
        # and the logits at every step agree, not only their argmax
        _, cache = model.forward_cached(cached[:, :6], [iv])
        for t in range(6, cached.shape[1]):
            step, cache = model.forward_cached(cached[:, t : t + 1], [iv], cache)
            want = model.run(cached[:, : t + 1], [iv])[:, -1]
            assert torch.allclose(step[:, -1], want, atol=1e-4), (model.backend, positions, t)


def test_steering_holds_on_cached_steps_and_zero_changes_nothing(backends):
    for model in backends:
        plain = generate(model, PROMPT, 10, [], GREEDY)
        zero = generate(model, PROMPT, 10, [steer(model, scale=0.0)], GREEDY)
        assert torch.equal(plain, zero)
        everywhere = generate(model, PROMPT, 10, [steer(model, scale=20.0)], GREEDY)
        front = generate(model, PROMPT, 10, [steer(model, scale=20.0, positions=slice(0, 2))],
                         GREEDY)  # fmt: skip
        assert not torch.equal(everywhere, plain)
        # Steering at every position also acts on the generated tokens: the cached steps see it.
        iv = steer(model, scale=20.0)
        _, cache = model.forward_cached(everywhere[:, :-1], [iv])
        steered_step, _ = model.forward_cached(everywhere[:, -1:], [iv], cache)
        _, cache = model.forward_cached(everywhere[:, :-1], [iv])
        unsteered_step, _ = model.forward_cached(everywhere[:, -1:], [], cache)
        assert not torch.allclose(steered_step, unsteered_step)
        assert front.shape == plain.shape


def test_one_vector_per_row_equals_each_row_alone(backends):
    model = backends[1]
    base = steer(model, scale=1.0)
    coefs = torch.tensor([0.0, 5.0, -5.0, 20.0])
    batched = AddToResidual(1, coefs[:, None] * base.vector, None)
    seeds = [3, 3, 3, 3]
    sampling = Sampling(temperature=1.0, top_p=0.9, freq_penalty=0.5)
    together = generate(model, PROMPT, 8, [batched], sampling, seeds=seeds)
    for i, c in enumerate(coefs):
        alone = generate(model, PROMPT, 8, [AddToResidual(1, c * base.vector)], sampling, seeds=[3])
        assert torch.equal(together[i : i + 1], alone), i
    assert torch.equal(together[0:1], generate(model, PROMPT, 8, [], sampling, seeds=[3]))


def test_steering_changes_activations_only_from_its_layer_on(backends):
    model = backends[0]  # TransformerLens: every residual hook point can be read
    tokens = torch.tensor(PROMPT)
    last = model.spec.n_layers - 1
    names = [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_mid",
        f"blocks.{last}.hook_resid_post",
    ]
    seen = {}
    for key, ivs in (("plain", []), ("steered", [steer(model, layer=1)])):
        cache: dict[str, torch.Tensor] = {}
        hooks = [(n, lambda x, hook, c=cache: c.__setitem__(hook.name, x.clone())) for n in names]
        with model.model.hooks(fwd_hooks=hooks):
            model.run(tokens, ivs)
        seen[key] = [cache[n] for n in names]
    (before, mid, out), (before_s, mid_s, out_s) = seen["plain"], seen["steered"]
    assert torch.equal(before, before_s)  # all of layer 0: before the steering
    assert not torch.allclose(mid, mid_s) and not torch.allclose(out, out_s)


def test_sampling_rules():
    logits = torch.tensor([[3.0, 2.0, 0.0, -1.0]])
    counts = torch.zeros(1, 4)
    assert int(sample_next(logits, counts, GREEDY, None)) == 0
    assert int(sample_next(logits, torch.tensor([[2.0, 0, 0, 0]]), Sampling(0, 1, 1.0), None)) == 1
    narrow = Sampling(temperature=1.0, top_p=0.1, freq_penalty=0.0)  # only the top token
    draws = {int(sample_next(logits, counts, narrow, [torch.Generator().manual_seed(s)]))
             for s in range(50)}  # fmt: skip
    assert draws == {0}
    wide = Sampling(temperature=1.0, top_p=1.0, freq_penalty=0.0)
    draws = [int(sample_next(logits, counts, wide, [torch.Generator().manual_seed(s)]))
             for s in range(400)]  # fmt: skip
    share = sum(d == 0 for d in draws) / len(draws)
    assert abs(share - float(logits.softmax(-1)[0, 0])) < 0.08  # Gumbel-max samples the softmax
    with pytest.raises(ValueError, match="one per row"):
        generate(adapters_for(tiny_llama(seed=1), "t")[1], [[0, 1], [0, 2]], 2, seeds=[1])


@pytest.mark.parametrize("positions", [None, slice(0, 3)])
def test_steering_heads_outputs_holds_on_cached_steps_on_both_backends(backends, positions):
    iv = steer_z(backends[0], positions=positions)
    runs = []
    for model in backends:
        cached = generate(model, PROMPT, 8, [iv], GREEDY)
        assert torch.equal(cached, generate(model, PROMPT, 8, [iv], GREEDY, use_cache=False))
        if positions is None:
            assert not torch.equal(cached, generate(model, PROMPT, 8, [], GREEDY))
        runs.append(model.run(cached, [iv]))
    assert torch.allclose(runs[0], runs[1], atol=1e-4)  # TransformerLens = nnsight


def test_adding_at_every_heads_output_equals_adding_its_W_O_image(backends):
    """AddToZ over all heads = its image through W_O added to the attention output: checks
    output_weights on both layouts (Llama o_proj, GPT-2's Conv1D c_proj)."""
    tokens = torch.tensor(PROMPT)
    for model in backends:
        s = model.spec
        iv = steer_z(model, heads=range(s.n_heads))
        image = torch.einsum("hd,hdm->m", iv.vector.reshape(s.n_heads, s.d_head),
                             model.output_weights(1).float())  # fmt: skip
        via_out = Splice(1, "attn_out", lambda x, v=image: x + v.to(x))
        assert torch.allclose(model.run(tokens, [iv]), model.run(tokens, [via_out]), atol=1e-4)
        with pytest.raises(ValueError, match="hook_z"):
            model.run(tokens, [AddToZ(1, torch.zeros(s.d_model + 1))])
