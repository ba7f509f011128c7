"""ITOExplorer on a tiny config-built model with small SAEs built here: its payloads equal the ITO
analysis (fvu_pareto, ce_pareto, codes, agreement), the slider changes the per-token lists, long
prompts are coded in chunks, the sweeps run as requests with a progress step per (dictionary,
method, L0) and are cached, and bad input shows in the widget with the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.analysis.ito import compare
from attnviz.analysis.ito.compare import agreement, ce_pareto, codes, fvu_pareto, site_inputs
from attnviz.analysis.sae_check import CHECK_TEXT, site_activations
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.widgets import ito as ito_widget
from attnviz.widgets import ito_held, static
from attnviz.widgets.arrays import decode_array
from attnviz.widgets.export import widget_state
from attnviz.widgets.ito import ITOExplorer
from tests.helpers import TEXT, ask, check_figure_files

L0S = (1, 2, 4, 8)
METHODS = ("topk", "mp", "gp")


@pytest.fixture(autouse=True)
def bundles(monkeypatch, tmp_path):
    """Stand-in bundles, so these tests need no front-end build."""
    for name in ("ito", "export_host"):
        (tmp_path / f"{name}.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


def tiny_sae(model, site="z", layer=1, extra=64, k=8, seed=0) -> SAE:
    """A top-k SAE whose decoder is +-e_i, centred on the site's mean over the check's text (a
    tiny random model's activations vary little around it), plus `extra` random unit atoms that
    its encoder weighs at half: it passes the check on the model, and ITO may use every atom."""
    spec = model.spec
    d_in = SAEConfig.for_model(spec, site, layer, d_sae=1).d_in
    sae = SAE(SAEConfig.for_model(spec, site, layer, 2 * d_in + extra, "topk", k=k))
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(extra, d_in, generator=g), dim=-1)
    eye = torch.eye(d_in)
    mean = site_activations(model, sae, model.to_tokens(CHECK_TEXT))[0, 1:].float().mean(0)
    with torch.no_grad():
        sae.coder.W_dec.copy_(torch.cat([eye, -eye, atoms]))
        sae.coder.W_enc.copy_(torch.cat([eye, -eye, 0.5 * atoms]).T)
        sae.coder.b_enc.zero_()
        sae.coder.b_out.copy_(mean)
    return sae


@pytest.fixture(scope="module")
def model(tiny_llama_adapter):
    return tiny_llama_adapter


@pytest.fixture(scope="module")
def saes(model):
    return {"z1": tiny_sae(model), "z1b": tiny_sae(model, seed=1, extra=32, k=4)}


@pytest.fixture(scope="module")
def contexts(model):
    ids = model.to_tokens(TEXT + " and then the dog ran home to sleep by the fire")
    return torch.cat([ids[:, :16], ids[:, 3:19], ids[:, 6:22]])


@pytest.fixture(scope="module")
def shown(model, saes, contexts):
    return ITOExplorer(model, saes, TEXT, l0=4, l0s=L0S, methods=METHODS, contexts=contexts)


def prompt_inputs(model, sae, text=TEXT):
    return site_activations(model, sae, model.to_tokens(text))[0].float()


def nonzero(f: torch.Tensor) -> list[tuple[int, float]]:
    idx = f.nonzero().flatten()
    idx = idx[f[idx].argsort(descending=True, stable=True)]
    return [(int(i), float(f[i])) for i in idx]


def assert_lists(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert sorted(f for f, _ in got) == sorted(f for f, _ in want)
    acts = dict(want)
    assert [a for _, a in got] == sorted((a for _, a in got), reverse=True)
    for f, a in got:
        assert a == pytest.approx(acts[f], abs=1e-5)


def test_fvu_curves_equal_fvu_pareto_with_progress_per_cell_and_a_cache(
    shown, saes, contexts, model, monkeypatch
):
    replies = ask(shown, monkeypatch, "p1", "pareto")
    assert replies[-1]["kind"] == "answer", replies[-1]
    texts = {r["text"] for r in replies if r["kind"] == "progress"}
    for name in saes:
        for m in METHODS:
            for k in L0S:
                assert f"{name}: {m} at L0 {k}" in texts
                if m != "topk":
                    assert f"{name} (random): {m} at L0 {k}" in texts
    x = site_inputs(model, saes["z1"], contexts)
    want = fvu_pareto(saes, x, L0S, METHODS, random_baseline=True)
    got = {(r["dictionary"], r["method"], r["target_l0"]): r for r in shown.pareto["rows"]}
    assert len(got) == len(want) and shown.pareto["complete"]
    for r in want.itertuples():
        key = (r.dictionary, r.method, None if np.isnan(r.target_l0) else int(r.target_l0))
        assert got[key]["l0"] == pytest.approx(r.l0, abs=1e-6)
        assert got[key]["fvu"] == pytest.approx(r.fvu, rel=1e-5)
    assert shown.pareto["n_tokens"] == x.shape[0]
    # each method against the encoder at the swept L0 nearest the encoder's (8 for z1, 4 for z1b)
    versus = shown.pareto["versus"]
    for name, at in (("z1", 8), ("z1b", 4)):
        mine = [v for v in versus if v["dictionary"] == name]
        assert sorted(v["method"] for v in mine) == sorted(
            ["topk", "mp", "gp", "mp, random dictionary", "gp, random dictionary"]
        )
        enc = got[(name, "encoder", None)]["fvu"]
        for v in mine:
            dname = name + (":random" if "random" in v["method"] else "")
            fvu_at = got[(dname, v["method"].split(",")[0], at)]["fvu"]
            assert v["target_l0"] == at and v["fvu"] == fvu_at
            assert v["difference"] == pytest.approx(fvu_at - enc) and v["ratio"] == pytest.approx(
                fvu_at / enc
            )

    # one chart per dictionary: a line per method, the random baseline dashed, the encoder a point
    charts = shown.pareto["charts"]
    assert [c["dictionary"] for c in charts] == list(saes)
    series = {s["name"]: s for s in charts[0]["spec"]["series"]}
    assert {"topk", "mp", "gp", "mp, random dictionary", "gp, random dictionary"} <= set(series)
    assert series["gp, random dictionary"]["dash"] and not series["gp"].get("dash")
    (enc,) = [s for s in series.values() if s["name"].startswith("encoder")]
    assert enc["mode"] == "markers" and decode_array(enc["x"]).tolist() == [8.0]
    assert charts[0]["spec"]["x"]["log"]
    gp = decode_array(series["gp"]["y"])
    assert gp[-1] < decode_array(series["gp, random dictionary"]["y"])[-1]  # beats random atoms

    calls = []
    monkeypatch.setattr(ito_held, "codes", lambda *a, **k: calls.append(a))
    again = ask(shown, monkeypatch, "p2", "pareto")
    assert again[-1]["kind"] == "answer" and calls == []  # cached: no code is computed again


def test_the_slider_changes_the_per_token_lists(shown, saes, model):
    sae = saes["z1"]
    x = prompt_inputs(model, sae)
    shown.l0 = 4
    last = len(shown.tokens) - 1
    assert shown.token == last and shown.codes["l0"] == 4
    f_enc, f_gp4 = codes(sae, x, "encoder"), codes(sae, x, "gp", 4)
    for t in (1, last):
        lists = shown.token_features(t)
        assert_lists(lists["encoder"], nonzero(f_enc[t]))
        assert_lists(lists["ito"], nonzero(f_gp4[t]))
    before = shown.token_features(last)
    shown.l0 = 2
    after = shown.token_features(last)
    assert shown.codes["l0"] == 2 and shown.error == ""
    assert after["encoder"] == before["encoder"] and after["ito"] != before["ito"]
    assert 1 <= len(after["ito"]) <= 2
    assert_lists(after["ito"], nonzero(codes(sae, x, "gp", 2)[last]))
    shown.method = "topk"  # top-k of the encoder: its two largest
    assert shown.token_features(last)["ito"] == after["encoder"][:2]
    shown.method = "gp"
    shown.dictionary = "z1b"
    assert shown.codes["dictionary"] == "z1b" and len(shown.token_features(last)["encoder"]) == 4


def test_long_prompts_are_coded_in_chunks(model, saes, contexts, monkeypatch):
    monkeypatch.setattr(ito_widget, "CHUNK_TOKENS", 16)
    text = " ".join([TEXT] * 16)  # about 190 tokens: 12 chunks
    view = ITOExplorer(model, {"z1": saes["z1"]}, text, l0=8, l0s=L0S, contexts=contexts)
    x = prompt_inputs(model, saes["z1"], text)
    assert len(view.tokens) == x.shape[0] > 150
    whole = codes(saes["z1"], x, "gp", 8)  # one batch
    for t in (0, 17, 100, x.shape[0] - 1):
        assert_lists(view.token_features(t)["ito"], nonzero(whole[t]))
    ptr = decode_array(view.codes["ito"]["ptr"])
    assert ptr[-1] == int((whole != 0).sum())

    monkeypatch.setattr(ito_widget, "MAX_TOKENS", 100)
    view.prompt = text + " again"
    assert "shorten it" in view.error and "100" in view.error
    assert view.prompt == text and len(view.tokens) == x.shape[0]  # the last picture stays


def test_a_feature_click_shows_its_scatter_and_the_agreement(shown, saes, model, contexts):
    shown.dictionary, shown.method, shown.l0 = "z1", "gp", 4
    sae = saes["z1"]
    feature = shown.token_features()["ito"][0][0]
    shown.feature = feature
    s = shown.scatter
    assert shown.error == "" and s["feature"] == feature and (s["method"], s["l0"]) == ("gp", 4)
    x = site_inputs(model, sae, contexts)
    a, b = codes(sae, x, "encoder")[:, feature], codes(sae, x, "gp", 4)[:, feature]
    union = (a != 0) | (b != 0)
    points, diagonal = s["chart"]["series"]
    assert np.allclose(decode_array(points["x"]), a[union].numpy(), atol=1e-5)
    assert np.allclose(decode_array(points["y"]), b[union].numpy(), atol=1e-5)
    assert len(points["labels"]) == int(union.sum()) and points["labels"][0].startswith("context")
    assert diagonal["mode"] == "lines" and diagonal["dash"]
    assert s["stats"]["both"] == int(((a != 0) & (b != 0)).sum())
    want = agreement(sae, x, 4, "gp")
    for k in ("corr", "corr_strong", "corr_weak", "jaccard"):
        assert s["agreement"][k] == (pytest.approx(want[k]) if not np.isnan(want[k]) else None)
    shown.l0 = 2  # the slider redraws the scatter at the new L0
    assert shown.scatter["l0"] == 2 and shown.scatter["feature"] == feature
    shown.dictionary = "z1b"  # another SAE: another feature numbering
    assert shown.feature == -1 and shown.scatter == {}


def test_ce_curves_equal_ce_pareto_and_value_saes_say_why_not(model, saes, contexts, monkeypatch):
    v = tiny_sae(model, "v", 1, extra=16, k=4)
    view = ITOExplorer(model, {"z1": saes["z1"], "v1": v}, TEXT, l0=2, l0s=(1, 4),
                       methods=("gp",), contexts=contexts)  # fmt: skip
    assert [d["splicable"] for d in view.dictionaries] == [True, False]
    assert "cannot be spliced" in view.dictionaries[1]["note"]
    replies = ask(view, monkeypatch, "c", "ce")
    assert replies[-1]["kind"] == "answer", replies[-1]
    progress = [r for r in replies if r["kind"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == (2 + 1 + 2)  # one batch of contexts
    assert any("gp at L0 4" in r["text"] for r in progress)
    want = ce_pareto(model, saes["z1"], [contexts], (1, 4), ("gp",), seed=0)
    got = {(r["method"], r["target_l0"]): r for r in view.ce["rows"]}
    for r in want.itertuples():
        row = got[(r.method, None if np.isnan(r.target_l0) else int(r.target_l0))]
        for k in ("ce_recovered", "ce_lo", "ce_hi", "loss_increase"):
            assert row[k] == pytest.approx(getattr(r, k), rel=1e-5, abs=1e-7)
        assert row["warning"] == r.warning
    (chart,) = view.ce["charts"]
    assert chart["dictionary"] == "z1" and "v1" in view.ce["notes"][0]
    series = chart["spec"]["series"]
    assert "lo" in series[0] and "hi" in series[0]
    for s, rows in ((series[0], [got[("gp", 1)], got[("gp", 4)]]),):
        for label, row in zip(s["labels"], rows, strict=True):
            assert "nats/token" in label and ("⚠" in label) == bool(row["warning"])


def test_errors_name_the_fix_in_the_widget(model, saes, contexts):
    other = tiny_sae(model)
    other.cfg.model = "gpt2"
    wrong_site = SAE(SAEConfig.for_model(model.spec, "resid_pre", 1, 128))  # random: no fit
    view = ITOExplorer(model, {"ok": saes["z1"], "other": other, "site": wrong_site}, TEXT,
                       l0s=L0S, contexts=contexts)  # fmt: skip
    assert [d["name"] for d in view.dictionaries] == ["ok"]
    assert "other is an SAE for gpt2, not tiny-llama" in view.error
    assert "attnviz train sae --site z --layer 1" in view.error
    assert "site: " in view.error and "FVU" in view.error

    view = ITOExplorer(model, saes["z1"], TEXT, l0=16, l0s=L0S, contexts=contexts)
    assert view.error == "" and view.dictionary == "z-sae-L1"  # a name made from its site
    codes_before = view.codes
    view.l0 = 0
    assert "L0 0 is out of range" in view.error and "from 1 to 192" in view.error
    assert view.l0 == 16 and view.codes is codes_before
    view.l0 = 5
    assert view.error == "" and view.codes["l0"] == 5
    view.method = "lasso"
    assert "choose one of gp, omp, mp, topk" in view.error and view.method == "gp"
    view.token = 99
    assert "token 99 is out of range" in view.error and view.token == len(view.tokens) - 1
    view.prompt = "   "
    assert "empty" in view.error and view.prompt == TEXT
    view.feature = 500
    assert "feature 500 is out of range" in view.error and view.feature == -1

    clamped = ITOExplorer(model, saes["z1"], TEXT, l0=1000, l0s=L0S, contexts=contexts)
    assert "L0 1000 is out of range" in clamped.error and clamped.l0 == 16
    none = ITOExplorer(model, {"other": other}, TEXT, l0s=L0S, contexts=contexts)
    assert none.dictionaries == [] and "gpt2" in none.error and none.codes == {}
    with pytest.raises(ValueError, match="choose from"):
        ITOExplorer(model, saes["z1"], TEXT, methods=("lasso",), contexts=contexts)
    with pytest.raises(TypeError, match="attnviz SAEs"):
        ITOExplorer(model, [object()], TEXT, contexts=contexts)  # type: ignore[list-item]


def test_state_export_and_figure(shown, tmp_path, monkeypatch):
    shown.dictionary, shown.method, shown.l0 = "z1", "gp", 4
    shown.run_pareto()
    shown.show_feature(shown.token_features()["ito"][0][0])
    state = widget_state(shown)
    for name in ("prompt", "dictionary", "method", "l0", "token", "feature", "codes", "pareto",
                 "scatter"):  # fmt: skip
        assert name in state
    assert "$bytes" in str(state["codes"]["ito"]["acts"])  # arrays travel as bytes
    html = shown.to_html(tmp_path / "ito.html").read_text()
    assert '"pareto"' in html and "http://" not in html and "https://" not in html
    fig = shown.figure()
    assert len(fig.data) > 6 and any(t.line.dash == "dash" for t in fig.data)
    check_figure_files(shown, tmp_path, width=900, height=600)
    assert "ITOExplorer(tiny-llama: z1, z1b" in repr(shown)


def test_codes_are_the_analysis_codes_not_a_copy(monkeypatch, shown):
    """The widget asks compare.codes for every code it shows (no second implementation)."""
    seen = []
    real = compare.codes

    def spy(sae, x, method, l0=None, **kw):
        seen.append(method)
        return real(sae, x, method, l0, **kw)

    monkeypatch.setattr(ito_widget, "codes", spy)
    shown.l0 = 3
    assert "encoder" in seen and shown.method in seen
