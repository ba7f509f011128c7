"""Cells of tutorial 02 QK pairs: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
    (
        "md",
        """# Why a head attends where it does: QK feature pairs

An attention weight comes from a score, the dot product of a query at the destination with a key
at the source. A *QK transcoder* rewrites the layer's queries and keys as sums of sparse,
nameable features. Each score then splits into *query feature x key feature* pairs: "this
feature at the destination, combined with that feature at the source, adds so much". A learned
*pair mask* keeps the few pairs that each head needs.

This notebook uses the QK transcoders that ship with attnviz for the embedded SmolLM2-135M.
`PatternExplorer` measures how well the transcoders reproduce a layer's patterns, `PairExplorer`
splits one attention score into its pairs, and at the end we see what the top pair's features fire
on. `03_qk_transcoders_from_scratch.ipynb` shows how such dictionaries are trained.""",
    ),
    (
        "code",
        """import pandas as pd

import attnviz
from attnviz.dictionaries.pretrained import list_pretrained

model = attnviz.load_model()  # SmolLM2-135M-Instruct, offline
pd.DataFrame(list_pretrained()).drop(columns="path")""",
    ),
    (
        "md",
        """Each of the three layers has two dictionaries. `qk_transcoder` reads the residual stream and
outputs queries and keys, and it has a pair table (`pairs`). `qk_sae` is a plain sparse
autoencoder on q and k, kept for comparison. The widgets use the transcoders.

## True and reconstructed patterns

`PatternExplorer` shows one layer of a prompt as four heatmaps of the selected head:

1. **model**: the true pattern.
2. **transcoder**: the pattern from the transcoders' queries and keys (q̂·k̂), which uses every
   pair of features.
3. **masked map**: the pattern when only the pairs kept by the mask count, which is the version
   whose scores we decompose below.
4. **difference**: reconstruction minus model, positive where the reconstruction gives a cell
   too much weight and negative where it gives too little.

Above the heatmaps, a thumbnail for each head shows its KL divergence, KL(true || reconstruction)
in nats, averaged over destination rows. Lower is better, and 0 is a perfect copy. The prompt
mentions *lighthouse* twice. We use layer 15, one of the three with a shipped transcoder.""",
    ),
    (
        "code",
        """from attnviz.widgets.pattern_explorer import PatternExplorer

PROMPT = (
    "The old lighthouse keeper lit the lamp, and the ships in the bay saw the lighthouse at once."
)
LAYER = 15
pe = PatternExplorer(model, PROMPT, layer=LAYER)
pe""",
    ),
    (
        "code",
        """kl = pd.DataFrame(pe.kl).rename_axis("head")
kl["masked - transcoder"] = kl["masked"] - kl["transcoder"]
pairs_table = pe.dictionaries[LAYER].pairs
print(pe.dictionary, f"({pairs_table.fraction_kept:.2%} of all query x key x head pairs)")
print(f"layers with a dictionary: {pe.layers}")
mean = kl.mean()
print(f"mean KL over heads: transcoder {mean['transcoder']:.3f}, masked {mean['masked']:.3f} nats;"
      f" hardest head: {kl['transcoder'].idxmax()}")
kl.round(3)""",
    ),
    (
        "md",
        """The masked map keeps only a small share of all possible pairs, yet its KL stays close to the
full transcoder's on most heads. For most heads, then, the kept pairs are enough to explain the
pattern.

## Picking a cell to explain

Which head reads the first *lighthouse* most strongly, from which later token, in a way the
dictionary reproduces? We search the patterns instead of guessing: the cell whose weight is large
both in the model and in the masked map (the smaller of the two is largest), so that the pairs
below explain something the model really does.""",
    ),
    (
        "code",
        """import torch

rec = pe.reconstruction  # .true / .transcoder / .masked: [heads, dest, src]
tokens = pe.tokens
SRC = tokens.index(" lighthouse")  # the first occurrence
true_w = rec.true.float()[:, SRC + 1 :, SRC]  # [heads, destinations after SRC]
both = torch.minimum(true_w, rec.masked.float()[:, SRC + 1 :, SRC])
HEAD, row = divmod(int(both.argmax()), both.shape[1])
DEST = SRC + 1 + row
print(f"head {HEAD}: {tokens[DEST]!r} (token {DEST}) -> {tokens[SRC]!r} (token {SRC})")
for kind in ("true", "transcoder", "masked"):
    print(f"  {kind:>10} weight {float(rec.pattern(kind)[HEAD, DEST, SRC]):.3f}")""",
    ),
    (
        "md",
        """## Splitting the score

`PairExplorer` draws the selected head's pattern. Click a cell and the widget splits that cell's
score in the masked map (its value before the softmax) into rows:

- `pair`: the top query feature x key feature pairs, by absolute contribution;
- `other_pairs`: all the other kept pairs, summed together;
- `query_x_key_bias`, `query_bias_x_key`, `bias_x_bias`: the transcoders' outputs are a feature sum
  plus a bias vector, so each score also has terms where features meet a bias, and where the two
  biases meet.

These rows add up to the score exactly. Clicking a feature in the table shows its top examples.
The `cell=` argument makes the same click from Python.""",
    ),
    (
        "code",
        """from attnviz.widgets.pair_explorer import PairExplorer

px = PairExplorer(model, PROMPT, layer=LAYER, head=HEAD, cell=(DEST, SRC))
px""",
    ),
    (
        "code",
        """d = px.decomposition
rows = pd.DataFrame(d["rows"])
total = rows["contribution"].sum()
print(f"cell {d['dest_token']!r} -> {d['src_token']!r}, head {d['head']}, {d['kind']} map")
print(f"score {d['score']:.5f}; sum of the rows {total:.5f}")
assert abs(total - d["score"]) < 1e-3 * max(1.0, abs(d["score"]))
print(f"weight after softmax: {d['weight']:.3f} (the model's: {d['true_weight']:.3f})")
rows[["kind", "label", "contribution", "f_q", "f_k", "mask", "map_weight", "n_pairs"]].round(4)""",
    ),
    (
        "md",
        """**The columns.** `f_q` is the query feature's activation at the destination and `f_k` the key
feature's activation at the source. `map_weight` is the score that one unit of each feature would
add: the dot product of the two features' decoder directions for this head, divided by √d_head.
This model uses rotary positions, so the two directions are first rotated to the destination and
source positions, which makes `map_weight` depend on the distance between the two tokens. `mask`
is the value the pair table learned for the pair: 0 means the pair was dropped, and a kept pair's
value scales its contribution. So for each pair,

    contribution = f_q x f_k x mask x map_weight

and a large contribution needs both features active *and* a large map weight. Keep in mind that the
decomposition explains the *reconstruction's* score. When `weight` and `true_weight` above differ a
lot, the pairs describe how the dictionary approximates this cell, which is not necessarily how the
model computes it. The difference panel of `PatternExplorer` shows where that happens.""",
    ),
    (
        "code",
        """pairs = rows[rows["kind"] == "pair"]
product = pairs["f_q"] * pairs["f_k"] * pairs["mask"] * pairs["map_weight"]
print("contribution = f_q x f_k x mask x map_weight:",
      bool(((product - pairs["contribution"]).abs() < 1e-4).all()))
rows.groupby("kind", sort=False)["contribution"].sum().round(4)  # pairs vs bias terms""",
    ),
    (
        "md",
        """## What the top pair's features fire on

`show_feature` does what clicking a feature in the table does. It finds the feature's
max-activating contexts in held-out documentation text that the dictionaries were not trained on,
together with how often the feature fires. The first call runs the dictionary over that text, which
takes a few seconds. Below, `[[...]]` marks the token where the feature is active.""",
    ),
    (
        "code",
        r"""top = pairs.iloc[0]
for side, feature in (("q", int(top["q_feature"])), ("k", int(top["k_feature"]))):
    info = px.show_feature(side, feature)
    print(f"{side} feature {feature}: active on {info['density']:.1%} of "
          f"{info['n_tokens']:,} held-out tokens")
    for ex in info["examples"][:5]:
        c = ex["center"]
        text = "".join(ex["tokens"][:c]) + f"[[{ex['tokens'][c]}]]" + "".join(ex["tokens"][c + 1 :])
        text = text.replace("\n", "↵")
        print(f"  {ex['activation']:5.2f}  {text}")""",
    ),
    (
        "md",
        """A feature that fires on a large share of all tokens is a broad one, active in many kinds of
context rather than on one specific thing. Pairs of broad features often carry a head's general
preferences, and rarer features carry the specific ones. Try other cells by clicking in the widget,
or with `px.select_cell(dest, src)`.

## Export

Like every attnviz widget, `PatternExplorer` can be written to one self-contained HTML file that
opens offline.""",
    ),
    (
        "code",
        """html_file = pe.to_html("pattern_explorer.html")
print(f"{html_file}: {html_file.stat().st_size / 1024:.0f} KiB")""",
    ),
]
