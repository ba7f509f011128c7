"""Both adapters on small random models of both position schemes (rotary+GQA, absolute)."""

from __future__ import annotations

import pytest
import torch

from attnviz.analysis.patterns import pattern_from_qk
from attnviz.models import AddToResidual, ReplacePattern, Splice
from attnviz.models.adapter import normalise
from tests.tiny_models import adapters_for, bridge_adapter_for, tiny_gpt2, tiny_llama

BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2}
BACKENDS = ["transformer_lens", "nnsight", "transformer_bridge"]
each_backend = pytest.mark.parametrize("backend", BACKENDS)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def adapters(request):
    """The three backends over the same random weights, by backend name."""
    name = f"tiny-{request.param}"
    tl, ns = adapters_for(BUILDERS[request.param](), name)
    bridge = bridge_adapter_for(BUILDERS[request.param](), name)  # same seed, same weights
    return {"transformer_lens": tl, "nnsight": ns, "transformer_bridge": bridge}


@pytest.fixture(scope="module")
def pair(adapters):
    return adapters["transformer_lens"], adapters["nnsight"]


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(1)
    return torch.randint(0, 49152, (2, 24))


def test_backends_agree_on_logits(adapters, tokens):
    reference = adapters["nnsight"].run(tokens)
    for name in ("transformer_lens", "transformer_bridge"):
        assert torch.allclose(adapters[name].run(tokens), reference, atol=1e-4), name


@each_backend
@pytest.mark.parametrize("layer", [0, 1])
def test_pattern_recomputed_from_q_and_k(adapters, tokens, backend, layer):
    adapter = adapters[backend]
    acts = adapter.attention(tokens, layer)
    # Rotation, grouped-query expansion, causal mask, scale and softmax, from un-rotated q and k.
    recomputed = adapter.pattern_from_qk(acts.q, acts.k, layer)
    assert (recomputed - acts.pattern).abs().max() < 1e-5
    # The adapter's rotation is the model's own.
    assert torch.allclose(acts.q_rot, adapter.rotate(acts.q, layer), atol=1e-5)
    assert torch.allclose(acts.k_rot, adapter.rotate(acts.k, layer), atol=1e-5)
    # And q, k are the normalised residual through the (norm-folded) weights.
    w = adapter.qk_weights(layer)
    assert torch.allclose(w.queries(acts.resid_normed), acts.q, atol=1e-4)
    assert torch.allclose(w.keys(acts.resid_normed), acts.k, atol=1e-4)
    # z is the pattern applied to v, head by head.
    s = adapter.spec
    v = acts.v.repeat_interleave(s.group_size, dim=2)
    z = torch.einsum("bhqk,bkhd->bqhd", acts.pattern, v)
    assert torch.allclose(z, acts.z, atol=1e-5)


def test_backends_agree_on_activations(adapters, tokens):
    ns = adapters["nnsight"]
    b = ns.attention(tokens, 1)
    # resid_normed is resid_pre through the norm without its weight.
    s = ns.spec
    assert torch.allclose(normalise(b.resid_pre, s.normalization, s.norm_eps), b.resid_normed)
    for backend in ("transformer_lens", "transformer_bridge"):
        other = adapters[backend]
        for name, x in other.attention(tokens, 1).as_dict().items():
            assert torch.allclose(x, getattr(b, name), atol=1e-4), (backend, name)
        unbos = {"bos_token_id": None}
        assert other.spec.to_dict() | unbos == ns.spec.to_dict() | unbos, backend
        # LayerNorm folding may centre W_Q (inputs have zero mean), so compare what they compute.
        w_other, w_ns = other.qk_weights(1), ns.qk_weights(1)
        assert torch.allclose(
            w_other.queries(b.resid_normed), w_ns.queries(b.resid_normed), atol=1e-4
        )
        assert torch.allclose(w_other.keys(b.resid_normed), w_ns.keys(b.resid_normed), atol=1e-4)


def test_positions_matter_only_for_rotary(pair, tokens):
    tl, _ = pair
    acts = tl.attention(tokens, 0)
    if tl.spec.positional == "rotary":
        assert not torch.allclose(acts.q_rot, acts.q)
        # A rotation keeps norms.
        assert torch.allclose(acts.q_rot.norm(dim=-1), acts.q.norm(dim=-1), atol=1e-4)
    else:
        assert torch.equal(acts.q_rot, acts.q)
        assert tl.rotary(0, 8) is None


class Recorder:
    """An identity module for Splice that keeps what passed through it."""

    def __init__(self):
        self.seen = None

    def __call__(self, x):
        self.seen = x.detach().clone()
        return x


@each_backend
def test_replace_pattern_changes_that_head_only(adapters, tokens, backend):
    adapter = adapters[backend]
    s = adapter.spec
    layer, head = 1, 2
    n = tokens.shape[1]
    uniform = torch.tril(torch.ones(n, n))
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(tokens.shape[0], 1, n, n)

    def probe(interventions):
        z_rec, pre_rec = Recorder(), Recorder()
        logits = adapter.run(
            tokens,
            [Splice(layer, "resid_pre", pre_rec), *interventions, Splice(layer, "z", z_rec)],
        )
        return logits, pre_rec.seen, z_rec.seen.reshape(*tokens.shape, s.n_heads, s.d_head)

    clean_logits, clean_pre, clean_z = probe([])
    new_logits, new_pre, new_z = probe([ReplacePattern(layer, [head], uniform)])
    assert torch.equal(new_pre, clean_pre)  # nothing upstream moves
    others = [h for h in range(s.n_heads) if h != head]
    assert torch.allclose(new_z[:, :, others], clean_z[:, :, others], atol=1e-6)
    assert not torch.allclose(new_z[:, :, head], clean_z[:, :, head], atol=1e-3)
    # The replaced head's z is exactly the uniform average of its values.
    v = adapter.attention(tokens, layer, ["v"]).v[:, :, s.kv_head(head)]
    expected = torch.einsum("bqk,bkd->bqd", uniform[:, 0], v)
    assert torch.allclose(new_z[:, :, head], expected, atol=1e-5)
    assert not torch.allclose(new_logits, clean_logits, atol=1e-4)
    # The first position attends only to itself, so its output cannot change.
    assert torch.allclose(new_logits[:, 0], clean_logits[:, 0], atol=1e-5)


@each_backend
def test_add_to_residual_touches_only_its_positions(adapters, tokens, backend):
    adapter = adapters[backend]
    layer, positions = 1, [5, 6]
    vector = torch.randn(adapter.spec.d_model)
    seen = Recorder()
    clean = adapter.run(tokens)
    steered = adapter.run(
        tokens, [AddToResidual(layer, vector, positions), Splice(layer, "resid_pre", seen)]
    )
    clean_pre = Recorder()
    adapter.run(tokens, [Splice(layer, "resid_pre", clean_pre)])
    delta = seen.seen - clean_pre.seen
    assert torch.allclose(delta[:, positions], vector.expand(2, 2, -1), atol=1e-5)
    mask = torch.ones(tokens.shape[1], dtype=torch.bool)
    mask[positions] = False
    assert delta[:, mask].abs().max() == 0
    # Causal: positions before the first steered one keep their logits.
    assert torch.allclose(steered[:, :5], clean[:, :5], atol=1e-5)
    assert not torch.allclose(steered[:, 5:], clean[:, 5:], atol=1e-3)


def test_interventions_agree_across_backends(adapters, tokens):
    tl, ns = adapters["transformer_lens"], adapters["nnsight"]
    torch.manual_seed(3)
    n = tokens.shape[1]
    random_pattern = torch.rand(2, 2, n, n).tril()
    random_pattern = random_pattern / random_pattern.sum(-1, keepdim=True)
    interventions = [
        AddToResidual(0, torch.randn(tl.spec.d_model), slice(2, 9)),
        ReplacePattern(1, [0, 3], random_pattern),
        Splice(1, "z", lambda z: z * 0.5),
        Splice(1, "attn_out", lambda x: x + 0.1),
        Splice(1, "resid_post", lambda x: x * 0.9),
    ]
    reference = ns.run(tokens, interventions)
    assert torch.allclose(tl.run(tokens, interventions), reference, atol=1e-4)
    bridge = adapters["transformer_bridge"].run(tokens, interventions)
    assert torch.allclose(bridge, reference, atol=1e-4)


def test_splice_changes_output(adapters, tokens):
    for adapter in adapters.values():
        clean = adapter.run(tokens)
        zeroed = adapter.run(tokens, [Splice(0, "z", torch.zeros_like)])
        assert not torch.allclose(clean, zeroed, atol=1e-3)


def test_loss_is_next_token_cross_entropy(pair, tokens):
    tl, _ = pair
    loss = tl.loss(tokens)
    assert loss.shape == (2, tokens.shape[1] - 1)
    logits = tl.run(tokens)
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    )
    assert torch.allclose(loss.reshape(-1), expected, atol=1e-5)


def test_pattern_from_qk_masks_with_minus_infinity():
    q = torch.randn(1, 4, 2, 8)
    k = torch.randn(1, 4, 1, 8)  # one kv head shared by two query heads
    p = pattern_from_qk(q, k, attn_scale=8**0.5)
    assert p.shape == (1, 2, 4, 4)
    assert torch.all(p.triu(1) == 0)  # exactly zero above the diagonal
    assert torch.allclose(p.sum(-1), torch.ones(1, 2, 4))
