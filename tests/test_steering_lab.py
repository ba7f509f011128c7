"""SteeringLab on a tiny config-built model: the slider's generation is the analysis's (steered
and unsteered with one seed, zero strength = unsteered), the sweep's points are sweep() and
damage() of each method, bad input shows in the widget with the fix, export and figure."""

from __future__ import annotations

import pytest
import torch

from attnviz.analysis.steering import actadd, damage, residual_norm, sweep
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.models.generation import ACTADD_SAMPLING, generate
from attnviz.widgets import static
from attnviz.widgets import steering as steering_widget
from attnviz.widgets.export import widget_state
from attnviz.widgets.steering import SteeringLab
from tests.helpers import TEXT, ask, check_figure_files

RELATIVE = (0.0, 1.0, 3.0)


@pytest.fixture(autouse=True)
def bundles(monkeypatch, tmp_path):
    """Stand-in bundles, so these tests need no front-end build."""
    for name in ("steering", "export_host"):
        (tmp_path / f"{name}.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


@pytest.fixture(scope="module")
def model(tiny_llama_adapter):
    return tiny_llama_adapter


@pytest.fixture(scope="module")
def sae(model):
    torch.manual_seed(0)
    return SAE(SAEConfig.for_model(model.spec, "resid_pre", 1, 64))


@pytest.fixture(scope="module")
def contexts(model):
    ids = model.to_tokens(TEXT + " and then the dog ran home to sleep by the fire")
    return torch.cat([ids[:, :14], ids[:, 2:16], ids[:, 4:18]])


def lab(model, sae, contexts, **kw):
    kw = {"plus": "The cat", "minus": "A dog", "prompt": "The cat sat", "words": "the, cat",
          "n_new": 6, "rollouts": 3, **kw}  # fmt: skip
    return SteeringLab(model, sae, contexts=contexts, **kw)


def test_the_slider_generates_steered_beside_unsteered_with_one_seed(model, sae, contexts):
    view = lab(model, sae, contexts, relative=2.0, seed=4)
    assert view.error == "" and view.layer == 1
    v = actadd(model, "The cat", "A dog", 1)
    norm = residual_norm(model, 1, contexts[:4])
    coef = 2.0 * norm / v.norm
    assert view.vector["coef"] == pytest.approx(coef)
    ids = model.to_tokens("The cat sat")
    want = generate(model, ids.expand(2, -1), 6, v.interventions(torch.tensor([coef, 0.0])),
                    ACTADD_SAMPLING, seeds=[4, 4])  # fmt: skip
    texts = [model.tokenizer.decode(r[ids.shape[1] :].tolist()) for r in want]
    g = view.generation
    assert (g["steered"]["text"], g["unsteered"]["text"]) == tuple(texts)
    for part in ("steered", "unsteered"):
        text = g[part]["text"]
        for start, end in g[part]["hits"]:
            assert text[start:end].lower() in ("the", "cat")
    view.relative = 0.0
    assert view.generation["steered"]["text"] == view.generation["unsteered"]["text"]
    view.relative = 8.0
    assert view.generation["relative"] == 8.0 and view.generation["coef"] == pytest.approx(4 * coef)


def test_the_sweep_is_the_analysis_for_each_method(model, sae, contexts, monkeypatch):
    view = lab(model, sae, contexts)
    monkeypatch.setattr(steering_widget, "SWEEP_RELATIVE", RELATIVE)
    steps = []

    class FakeJob:
        def progress(self, done, total, text=""):
            steps.append((done, total, text))

        def check(self):
            pass

    out = view.run_sweep(FakeJob(), relative=RELATIVE)
    methods = [pts[0]["method"] for pts in out["points"]]
    assert methods == ["ActAdd", "SAE reconstruction", "padding features out"]
    assert steps[-1][0] == steps[-1][1] == 6 and any("damage" in s[2] for s in steps)
    assert [len(p) for p in out["points"]] == [3, 3, 3]
    assert [s["name"] for s in out["chart"]["series"]] == methods
    v = actadd(model, "The cat", "A dog", 1)
    norm = residual_norm(model, 1, contexts[:4])
    cs = [r * norm / v.norm for r in RELATIVE]
    s = sweep(model, v, cs, "The cat sat", ["the", "cat"], n_rollouts=3, n_new=6)
    d = damage(model, v, cs, contexts, batch=4)
    for i, p in enumerate(out["points"][0]):
        assert p["p_success"] == s.table.p_success[i] and p["relative"] == RELATIVE[i]
        assert p["loss_increase"] == pytest.approx(d.loss_increase[i], abs=1e-6)
        assert [r["text"] for r in p["rollouts"]] == s.texts[i]
    assert out["points"][0][0]["loss_increase"] == pytest.approx(0, abs=1e-6)
    assert any(p["on_frontier"] for p in out["points"][0])


def test_errors_name_the_fix_in_the_widget(model, sae, contexts):
    view = lab(model, sae, contexts)
    shown = view.generation
    view.words = " , "
    assert (
        "word list is empty" in view.error and view.words == "the, cat" and view.generation is shown
    )
    view.source = "feature"
    assert view.error == ""
    view.feature = 64
    assert "feature 64 is out of range" in view.error and view.feature == 0
    view.layer = 0
    assert "attnviz train sae --site resid_pre --layer 0" in view.error and view.layer == 1
    view.source = "pair"
    view.plus = "  "
    assert "both sides" in view.error and view.plus == "The cat"
    view.prompt = ""
    assert "empty" in view.error and view.prompt == "The cat sat"
    view.layer = 7
    assert "out of range" in view.error and view.layer == 1
    bare = SteeringLab(model, None, contexts=contexts, source="feature", prompt="The cat", n_new=2)
    assert "no SAE in this widget" in bare.error
    with pytest.raises(TypeError, match="resid_pre or z SAE"):
        SteeringLab(model, SAE(SAEConfig.for_model(model.spec, "v", 1, 16)), contexts=contexts)


def test_state_export_and_figure(model, sae, contexts, tmp_path):
    view = lab(model, sae, contexts)
    view.run_sweep(relative=(0.0, 2.0))
    view.point = [0, 1]
    state = widget_state(view)
    for name in ("plus", "minus", "relative", "generation", "sweep", "point"):
        assert name in state
    html = view.to_html(tmp_path / "steering.html").read_text()
    assert '"sweep"' in html and "https://" not in html
    fig = view.figure()
    assert len(fig.data) >= 3
    check_figure_files(view, tmp_path)
    assert "SteeringLab(ActAdd 'The cat' - 'A dog' at layer 1" in repr(view)


def test_the_sweep_request_runs_in_a_worker(model, sae, contexts, monkeypatch):
    view = lab(model, sae, contexts)
    monkeypatch.setattr(steering_widget, "SWEEP_RELATIVE", (0.0, 2.0))
    sent = ask(view, monkeypatch, "s", "sweep")
    assert sent[-1]["kind"] == "answer", sent[-1]
    assert [len(p) for p in view.sweep["points"]] == [2, 2, 2]


def test_a_z_sae_feature_steers_through_its_chosen_heads(model, contexts):
    from attnviz.analysis.steering import z_direction

    torch.manual_seed(2)
    z = SAE(SAEConfig.for_model(model.spec, "z", 1, 32))
    view = lab(model, z, contexts, source="feature", feature=7, relative=2.0)
    assert view.error == "" and view.sae_site == "z" and view.n_heads == model.spec.n_heads
    assert "all heads" in view.vector["name"]
    view.heads = 1
    want = z_direction(model, z, 7, heads=1)
    assert view.error == "" and view.vector["name"] == want.name
    ids = model.to_tokens("The cat sat")
    coef = view.vector["coef"]
    front = want.at(slice(0, ids.shape[1]))  # "front positions": the prompt's
    out = generate(model, ids.expand(2, -1), 6, front.interventions(torch.tensor([coef, 0.0])),
                   ACTADD_SAMPLING, seeds=[0, 0])  # fmt: skip
    assert view.generation["steered"]["text"] == model.tokenizer.decode(
        out[0, ids.shape[1] :].tolist()
    )
    assert list(view.methods()) == ["feature 7"]  # reconstruction / padding need a resid_pre SAE
    view.feature = 99
    assert "out of range" in view.error and view.feature == 7
