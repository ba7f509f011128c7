"""Cells of tutorial 04 attention-output SAEs: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
    (
        "md",
        """# What attention moves: SAEs on the heads' outputs and direct feature attribution

A sparse autoencoder trained on `hook_z` (the concatenated outputs of a layer's heads, before
W_O) rewrites what the layer writes as a sum of sparse features (Kissane et al. 2024). Because z
is linear in the values once the pattern is fixed, each feature's pre-activation at a token
splits *exactly* into one term per (head, source token) plus a bias remainder: its **direct
feature attribution** (DFA). This notebook trains a small z SAE, finds a feature that fires on
the second copy of a repeated sequence, and checks that its DFA sits on the induction heads and
on the token after the earlier copy.""",
    ),
    (
        "code",
        """import pandas as pd
import torch

import attnviz
from attnviz.dictionaries.pretrained import list_pretrained

model = attnviz.load_model()  # SmolLM2-135M-Instruct, offline
shipped = [r for r in list_pretrained(model.spec.name) if r["site"] == "z"]
print(f"shipped z SAEs: {[r['name'] for r in shipped] or 'none yet'}")
if shipped:  # SAELens's format; widgets use these when no sae= is given
    from attnviz.dictionaries.pretrained import load_pretrained

    print(load_pretrained(model.spec.name, shipped[0]["name"]).cfg.hook_names)""",
    ),
    (
        "md",
        """## Finding the induction heads

A sequence of random tokens, repeated: from the second copy on, an induction head at token t
attends to the token right after the earlier copy of t (t - T + 1) and copies it. We score
each head of the middle layers by that attention weight.""",
    ),
    (
        "code",
        """T = 24
g = torch.Generator().manual_seed(0)
rand = torch.randint(1000, 20000, (1, T), generator=g)
tokens = torch.cat([torch.tensor([[model.spec.bos_token_id]]), rand, rand], 1)
second = torch.arange(T + 1, 2 * T + 1)  # positions of the second copy
scores = {}
for layer in range(15, 21):
    pattern = model.attention(tokens, layer, ["pattern"]).pattern[0]
    scores[layer] = pattern[:, second, second - T + 1].mean(-1)
induction = pd.DataFrame({k: v.numpy() for k, v in scores.items()}).rename_axis("head")
LAYER = int(induction.max().idxmax())
HEADS = induction[LAYER].nlargest(2).index.tolist()
print(f"strongest induction heads: layer {LAYER}, heads {HEADS}")
induction.round(2)""",
    ),
    (
        "md",
        """## Training a small z SAE

We collect `z` and `v` of that layer over a few thousand pydocs tokens and train a top-k SAE
(Gao et al. 2024) of 512 features, 16 active per token. It is far too small and too briefly
trained to be good; it is enough to show the method, and it takes a minute on a laptop CPU.
`attnviz train sae --site z --layer L` trains real ones; `verify_on_model` is the check every
widget runs before it uses an SAE.""",
    ),
    (
        "code",
        """from attnviz.analysis.sae_check import verify_on_model
from attnviz.data import collect_activations
from attnviz.training.config import SAETrainConfig
from attnviz.training.sae import SAETrainer

store = collect_activations(model, "pydocs", layer=LAYER, n_tokens=48 * 128, out_dir="z-store",
                            fields=("z", "v"), chunk_contexts=16, progress=False)
cfg = SAETrainConfig(site="z", architecture="topk", k=16, d_sae=512, tokens=48 * 128 * 6,
                     batch_contexts=4, warmup_steps=10, lr=4e-3, eval_every=1000,
                     checkpoint_every=10_000, resample_every=1000, dead_window=100)
sae = SAETrainer(store, cfg, "z-sae-run").run(progress=False)
print(f"trained on {cfg.tokens:,} tokens; FVU on the check text: {verify_on_model(sae, model):.2f}")""",
    ),
    (
        "md",
        """## An induction feature, found by computation

The feature whose activation rises most from the first copy to the second is our candidate.
Its DFA at each second-copy token, summed over those tokens, tells which heads and which
sources (counted from the earlier copy) carry it.""",
    ),
    (
        "code",
        """from attnviz.analysis.dfa import feature_attribution

acts = model.attention(tokens, LAYER, ["pattern", "v", "z"])
f = sae.encode(acts.z[0]).detach()
first = torch.arange(1, T + 1)
FEATURE = int((f[second].mean(0) - f[first].mean(0)).argmax())
print(f"feature {FEATURE}: mean activation {f[first, FEATURE].mean():.2f} on the first copy, "
      f"{f[second, FEATURE].mean():.2f} on the second")
by_head = torch.zeros(model.spec.n_heads)
at_copy = other = 0.0
for t in second[1:].tolist():
    fa = feature_attribution(sae, acts.pattern[0], acts.v[0], t, [FEATURE])
    by_head += fa.by_head[0]
    src = fa.by_source[0]
    at_copy += float(src[t - T + 1])
    other += float(src.sum() - src[t - T + 1])
share = by_head / by_head.abs().sum()
print(f"share of |DFA| by head: {[round(float(s), 2) for s in share]}")
print(f"induction heads {HEADS} carry {float(share[HEADS].sum()):.0%} of it; the token after the "
      f"earlier copy carries {at_copy / (at_copy + other):.0%} of the summed source contributions")""",
    ),
    (
        "md",
        """## The widget

`FeatureAttribution` shows the prompt as tokens. Click a destination token: the SAE features
active there, by activation, with bars of each feature's decoder norm per head. Click a
feature: its DFA as a heads x sources heatmap (hover for head, source token and contribution)
whose cells plus the bias remainder add up to the pre-activation shown, the prompt's sources
shaded by their total, and the feature's max-activating held-out contexts and density. Here it
opens on the induction feature at the last token; in our run its DFA sat mostly on the two
induction heads and on the source right after the earlier copy (the numbers above).""",
    ),
    (
        "code",
        """from attnviz.widgets.feature_attribution import FeatureAttribution

PROMPT = model.tokenizer.decode(rand[0]) * 2
fa = FeatureAttribution(model, PROMPT, layer=LAYER, sae=sae)
dest = len(fa.tokens) - 1
fa.select(dest, FEATURE)
fa""",
    ),
    (
        "code",
        """d = fa.dfa
print(f"feature {d['feature']} at token {d['dest']}: pre-activation {d['pre_activation']:.3f}; "
      f"heads {[round(x, 3) for x in d['by_head']]} + remainder {d['remainder']:.3f}")""",
    ),
    (
        "md",
        """Typing a new prompt or choosing another layer recomputes in the kernel, as in the other
widgets; `fa.to_html("dfa.html")` writes a file that opens offline. In `PairExplorer`, a
clicked cell also lists the z-SAE features that move along that edge, and with
`attribution=fa` a click on one shows it here.""",
    ),
]
