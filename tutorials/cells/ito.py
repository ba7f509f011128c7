"""Cells of tutorial 06 inference-time optimisation: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
    (
        "md",
        """# Is it the dictionary or the encoder? Inference-time optimisation

An SAE is two things: a **dictionary** (its decoder rows, the directions it explains activations
with) and an **encoder** (a cheap guess, one matrix product and a nonlinearity, of which
directions are active). The GDM interpretability team's progress update #1 (2024) kept the
dictionary, threw the encoder away, and solved for the sparse code of each input directly, with
matching pursuit or gradient pursuit under a positivity constraint. Sweeping the target L0 then
compares *dictionaries* independently of their encoders: how well can these directions explain
the activations at all?

This notebook draws that Pareto for a shipped attention-output SAE of the embedded model,
against a random dictionary of the same shape, measures loss recovered with the pursued codes
spliced into the forward pass, and shows where ITO and the encoder disagree.""",
    ),
    (
        "code",
        """import pandas as pd
import torch

import attnviz
from attnviz.analysis.ito.compare import site_inputs
from attnviz.dictionaries.pretrained import held_out_contexts, load_pretrained

model = attnviz.load_model()  # SmolLM2-135M-Instruct, offline
sae = load_pretrained(model.spec.name, "z-sae-L2")  # hook_z of layer 2, top-k (16 per token)
held = held_out_contexts(model, 12)  # documents none of the shipped SAEs saw
x = site_inputs(model, sae, held)  # [tokens, 9 heads * 64], BOS left out
print(f"{x.shape[0]} held-out tokens of {sae.cfg.hook_names[0]}, {sae.cfg.d_sae} features")""",
    ),
    (
        "md",
        """## The FVU Pareto

For each target L0, the codes of: **top-k** (the encoder's activations, all but the k largest
zeroed), **MP** (matching pursuit: add the atom most correlated with the residual, k times) and
**GP** (gradient pursuit: like MP, then a step along the gradient over all chosen atoms with the
exact step size), both positive. The encoder itself is one point at its own L0. The same
pursuits on a **random dictionary** (2,048 random unit directions) are the floor: what any
dictionary of that size gets. `l0` is the true mean L0; a pursuit can stop below its target
when the residual is already explained or a coefficient clips to zero.""",
    ),
    (
        "code",
        """from attnviz.analysis.ito.compare import fvu_pareto

pareto = fvu_pareto({"z-L2": sae}, x, l0s=(1, 2, 4, 8, 16, 32, 64), methods=("topk", "mp", "gp"))
table = pareto.pivot_table(index="target_l0", columns=["dictionary", "method"], values="fvu")
print(pareto[pareto.method == "encoder"][["l0", "fvu"]].round(3).to_string(index=False))
table.round(3)""",
    ),
    (
        "md",
        """Read it along a row: at the encoder's own L0 (16), does GP on the same decoder beat the
encoder's FVU? And how far is the random dictionary behind, at every L0? The dictionary is what
separates the trained columns from the random ones; the encoder is what separates GP from top-k.
Beside each ratio read the absolute gap: FVU is a fraction of the activations' variance, so a
0.02 difference on an FVU of 0.3 is small.""",
    ),
    (
        "code",
        """at16 = pareto[(pareto.target_l0 == 16) & (pareto.dictionary == "z-L2")].set_index("method").fvu
enc = float(pareto[pareto.method == "encoder"].fvu.iloc[0])
rnd = pareto[(pareto.target_l0 == 16) & (pareto.dictionary == "z-L2:random")].set_index("method").fvu
print(f"L0 16: encoder {enc:.3f}, top-k {at16['topk']:.3f}, MP {at16['mp']:.3f}, GP {at16['gp']:.3f}")
print(f"GP - encoder: {at16['gp'] - enc:+.3f} FVU; random dictionary, GP: {rnd['gp']:.3f} "
      f"({rnd['gp'] - at16['gp']:+.3f} from the trained one)")""",
    ),
    (
        "md",
        """## Loss recovered, with the codes spliced in

FVU counts every direction alike; the model does not. `ce_pareto` splices each reconstruction
into the forward pass at the SAE's site (through the same `Splice` the encoder's CE recovered
uses) and reports CE recovered against zero-ablating the site, with a bootstrap interval over
contexts, and the absolute loss increase in nats per token.

This uses layer 18's SAE. At layer 2 the ratio cannot tell dictionaries apart: every
reconstruction keeps the SAE's `b_dec` (the mean output), and the mean alone undoes most of what
zero ablation breaks there, so even the random dictionary "recovers" over 90%. At layer 18 zero
ablation itself costs little (a few hundredths of a nat per token): each row then carries a
warning that the ratio's denominator is small, and the column to read is the absolute loss
increase.""",
    ),
    (
        "code",
        """from attnviz.analysis.ito.compare import ce_pareto

z18 = load_pretrained(model.spec.name, "z-sae-L18")
ce = ce_pareto(model, z18, held.split(4), l0s=(4, 16, 64), methods=("gp",), random_baseline=True)
cols = ["dictionary", "method", "target_l0", "l0", "ce_recovered", "ce_lo", "ce_hi",
        "loss_increase", "loss_increase_lo", "loss_increase_hi"]
print("warnings:", sorted(set(w for w in ce.warning if w)) or "none")
at16 = ce[ce.target_l0 == 16].set_index("dictionary").loss_increase
print(f"GP at L0 16 adds {at16.iloc[0]:+.4f} nats/token with the trained decoder, "
      f"{at16.iloc[1]:+.4f} with the random one")
ce[cols].round(3)""",
    ),
    (
        "md",
        """## Where ITO and the encoder disagree

At the encoder's own L0, GP picks its own set of features for every token. The update found the
two agree on **strong** activations and barely on weak ones. `agreement` splits the (token,
feature) pairs either method uses at the median of the encoder's non-zero activations: the
correlation of the two codes above and below it, and the mean Jaccard overlap of the chosen sets.""",
    ),
    (
        "code",
        """from attnviz.analysis.ito.compare import agreement, codes

agree = agreement(sae, x, method="gp")
print(f"L0 {agree['l0']:.0f}: correlation {agree['corr']:.2f} overall, {agree['corr_strong']:.2f} "
      f"on strong activations, {agree['corr_weak']:.2f} on weak; Jaccard {agree['jaccard']:.2f} "
      f"over {agree['pairs']:,} pairs")
enc_codes, gp_codes = codes(sae, x, "encoder"), codes(sae, x, "gp", 16)
token = 40
def top(code):
    values, idx = code[token].topk(8)
    return [f"{int(i)} ({float(v):.2f})" for i, v in zip(idx, values) if v > 0]
pd.DataFrame({"encoder": pd.Series(top(enc_codes)), "GP at L0 16": pd.Series(top(gp_codes))})""",
    ),
    (
        "md",
        """## The ITOExplorer

The same comparison, live: the Pareto curves for each method (and the random dictionary), an
L0 slider, and for a prompt, per token, the features the encoder chooses beside those ITO
chooses at the slider's L0, shared ones marked. Click a feature for its ITO-vs-encoder scatter.
The sweep runs as a request with a progress bar; `ito.to_html("ito.html")` writes a page that
opens offline.""",
    ),
    (
        "code",
        """from attnviz.widgets.ito import ITOExplorer

ito = ITOExplorer(model, {"z-L2": sae}, "When Mary and John went to the store, John gave a drink to",
                  l0=16, l0s=(1, 4, 16, 64), contexts=held[:4])
ito.run_pareto()  # the curves now (the widget would ask for them on display)
print(ito.pareto["versus"][0])
ito""",
    ),
    (
        "md",
        """Move the slider and the right-hand list changes while the encoder's stays; a token's
shading is how much the two sets overlap. Click a feature in either list for its scatter over
the held-out tokens: points on the dashed diagonal are tokens where ITO and the encoder agree,
points on an axis are tokens only one of them uses. The same from Python:""",
    ),
    (
        "code",
        """ito.l0 = 4
lists = ito.token_features(len(ito.tokens) - 1)
shared = set(f for f, _ in lists["encoder"]) & set(f for f, _ in lists["ito"])
print(f"last token: encoder {len(lists['encoder'])} features, GP at L0 4 {len(lists['ito'])}, "
      f"{len(shared)} shared")
scatter = ito.show_feature(lists["ito"][0][0])
print(scatter["stats"], {k: scatter["agreement"][k] for k in ("corr_strong", "corr_weak")})
ito.to_html("ito.html")""",
    ),
]
