"""Write the tutorial notebooks from the cell sources below (outputs are left empty: `make test`
executes every notebook, and Binder users run them live).

    .venv/bin/python tutorials/build_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

ATTENTION_PATTERNS = [
    (
        "md",
        """# Attention patterns

Each attention head decides, for every token, how much to read from each earlier token. Those
weights are its *attention pattern*. This notebook looks at patterns with no dictionaries involved:
the `AttentionView` widget, the same numbers as a pandas table, long prompts, and export to files.

Everything runs offline on a CPU with the small model that ships inside attnviz, SmolLM2-135M
(30 layers with 9 query heads each).""",
    ),
    (
        "code",
        """import pandas as pd
import torch

import attnviz

model = attnviz.load_model()  # SmolLM2-135M-Instruct, embedded in the package: no download
model""",
    ),
    (
        "md",
        """## What a pattern is

For one head the pattern is a square matrix over the prompt's tokens. Row *i* belongs to the
**destination** token *i*, the position whose query is doing the looking. Column *j* belongs to the
**source** token *j*, whose key is being looked at. Each row is a softmax, so it sums to 1. The
model is causal, so a token cannot attend to anything after it and everything above the diagonal is
0. Row 0 is the beginning-of-sequence token (BOS), which can attend only to itself.

`model.attention(ids, layer, fields)` runs the model only as far as the layer you ask for.""",
    ),
    (
        "code",
        """ids = model.to_tokens("The cat sat on the mat.")
tokens = model.to_str_tokens(ids[0])
acts = model.attention(ids, 0, ["pattern"])
pattern = acts.pattern[0]  # [heads, destination, source]
print("shape [batch, heads, destination, source]:", tuple(acts.pattern.shape))
print("every row sums to 1:", torch.allclose(pattern.sum(-1), torch.ones(pattern.shape[:2])))
print("nothing above the diagonal:", bool((pattern.triu(1) == 0).all()))
pd.DataFrame(pattern[0].numpy(), index=tokens, columns=tokens).round(2)  # layer 0, head 0""",
    ),
    (
        "md",
        """## A prompt that makes heads show what they do

Repeated text is useful for exposing heads. Below, a list of unrelated words appears twice. In the
second copy the model can predict each word by finding where the current word appeared before and
copying the word that came next. An **induction head** does this: from each token in the second
copy it attends to the token *after* that token's earlier occurrence. In the pattern this is a
diagonal stripe, shifted one place right of the diagonal that links each token to its first
occurrence. A **previous-token head** attends to position *i - 1*, one step left of the main
diagonal. Induction depends on heads like these: the token before each source has to be known
before a head can match on it.

Rather than hunt by eye, we score every head in every layer: how much weight each token puts on
the previous token, on BOS and on the induction target, plus the pattern's entropy
(`pattern_summary` computes all of these except the induction score).""",
    ),
    (
        "code",
        """from attnviz.analysis.patterns import pattern_summary

WORDS = (
    "violet harbor sixteen copper lantern meadow quartz pilot saddle ember tundra falcon "
    "ribbon cactus marble oyster walnut glacier pepper velvet anchor thistle"
)
PROMPT = f"{WORDS}. {WORDS}."
ids = model.to_tokens(PROMPT)


def induction_score(pattern, ids):
    \"\"\"Per head: the mean weight a repeated token puts on the token that followed its earlier
    occurrence (where an induction head looks).\"\"\"
    ids = ids[0].cpu()
    n = ids.numel()
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)  # source strictly before destination
    seen = (ids[:, None] == ids[None, :]) & earlier  # the same token, earlier
    target = torch.zeros_like(seen)
    target[:, 1:] = seen[:, :-1]  # ... and the token right after it
    rows = target.any(-1)  # destinations that repeat an earlier token
    return (pattern.float().cpu() * target).sum(-1)[:, rows].mean(-1)


def head_table(layer):
    pattern = model.attention(ids, layer, ["pattern"]).pattern[0]
    table = pattern_summary(pattern, layer)  # entropy, first_token (BOS), self, previous
    table["induction"] = induction_score(pattern, ids).numpy()
    return table


stats = pd.concat([head_table(layer) for layer in range(model.spec.n_layers)], ignore_index=True)
print(f"{ids.shape[1]} tokens; {len(stats)} heads scored")
stats.sort_values("induction", ascending=False).head(5).round(3)""",
    ),
    (
        "code",
        """best_induction = stats.loc[stats["induction"].idxmax()]
best_previous = stats.loc[stats["previous"].idxmax()]
LAYER, HEAD = int(best_induction["layer"]), int(best_induction["head"])
PREV_LAYER, PREV_HEAD = int(best_previous["layer"]), int(best_previous["head"])
print(f"strongest induction head:      layer {LAYER} head {HEAD} "
      f"({best_induction['induction']:.0%} of each repeated token's attention on its target)")
print(f"strongest previous-token head: layer {PREV_LAYER} head {PREV_HEAD} "
      f"({best_previous['previous']:.0%} of each token's attention on the token before it)")
where = "below" if PREV_LAYER < LAYER else "not below"
print(f"the previous-token head is {where} the induction head ({PREV_LAYER} vs {LAYER})")""",
    ),
    (
        "md",
        """## The widget

`AttentionView` shows every head of one layer. Each head has a small thumbnail (click one to
select it), and the selected head is drawn as a large heatmap with token labels. Hover over a
cell to see its destination token, source token and weight. You can type a new prompt or choose a
layer in the widget itself; the kernel recomputes the patterns. The widget opens on the strongest
induction head found above. Look for the stripe in the lower half.

Several thumbnails may look nearly empty except for a dark first column. Those heads park most of
their attention on BOS, an *attention sink*: a head with nothing useful to read puts its weight
there. Tick **contrast** to scale each head's colours to its largest weight outside the first
column. Whatever attention these heads do spend on other tokens then becomes visible.""",
    ),
    (
        "code",
        """from attnviz.widgets.attention_view import AttentionView

view = AttentionView(model, PROMPT, layer=LAYER, head=HEAD)
view""",
    ),
    (
        "md",
        """## The same numbers in Python

Here are the statistics for the widget's layer, one row per head. The labels come from rough
thresholds we chose. `first_token` is the share of attention on BOS, `previous` the share on the
token just before, `entropy` is in nats (`entropy_frac` divides it by the entropy of a uniform
row), and `induction` is the score defined above.""",
    ),
    (
        "code",
        """def role(row):
    if row["induction"] > 0.5:
        return "induction"
    if row["previous"] > 0.5:
        return "previous token"
    if row["first_token"] > 0.8:
        return "mostly BOS (sink)"
    return ""


layer_stats = stats[stats["layer"] == LAYER].drop(columns="layer").set_index("head")
layer_stats["role"] = layer_stats.apply(role, axis=1)
layer_stats.round(3)""",
    ),
    (
        "md",
        """The widget holds exactly these patterns. They travel to the browser as one byte per weight, so
decoding what the widget received should match `model.attention` to within about 1/254. Setting a
trait from Python updates the widget above. Here we switch it to the strongest previous-token head
found by the scan. The widget recomputes for the new layer, and the heatmap shows a line just below
the diagonal.""",
    ),
    (
        "code",
        """import numpy as np

from attnviz.widgets import decode_array

sent = decode_array(view.patterns)  # [heads, dest, src] as the browser decodes it; future = NaN
exact = model.attention(ids, LAYER, ["pattern"]).pattern[0].float().numpy()
print("largest difference from model.attention:", float(np.nanmax(np.abs(sent - exact))))
view.layer, view.head = PREV_LAYER, PREV_HEAD
print(f"the widget now shows layer {view.layer} head {view.head}")""",
    ),
    (
        "md",
        """## Long prompts

A 1,500-token prompt gives each head a 1,500 x 1,500 matrix, 2.25 million weights. Beyond 512
tokens the widget max-pools each pattern into square blocks before sending it, so a head stays
under 512 x 512 cells. `downsampled` is the block size. Each block shows its *largest* weight, which
keeps a one-cell-wide stripe visible instead of averaging it away. Hovering a block names the tokens
it covers. Here we build a long prompt by repeating a paragraph, and we only inspect the widget
rather than display it.""",
    ),
    (
        "code",
        """PARAGRAPH = (
    "Every evening the keeper wrote the weather in a notebook: the wind, the cloud, the colour "
    "of the sea, and the ships that had passed the point since noon. "
)
long = AttentionView(model, PARAGRAPH * 45, layer=LAYER)  # created, not displayed
print(f"{len(long.tokens)} tokens sent as {long.patterns['shape']} "
      f"([heads, rows, columns], blocks of {long.downsampled} x {long.downsampled} tokens)")
long.downsampled, len(long.tokens)""",
    ),
    (
        "md",
        """## Bad input

Bad input, such as an empty prompt, a prompt longer than the model's context or a layer that does
not exist, does not raise an exception inside the widget. The message goes into `error` and
appears in the widget, and the previous picture stays.""",
    ),
    (
        "code",
        """view.prompt = ""
print(view.error)""",
    ),
    (
        "code",
        """view.prompt = PROMPT  # a prompt that works clears the message
print(f"error: {view.error!r}; showing {len(view.tokens)} tokens")""",
    ),
    (
        "md",
        """## Export

`to_html` writes one self-contained HTML file with the script, the styles and the data all inside
it. The file opens offline, and hovering and choosing heads still work in it. `to_png` renders the
selected head through plotly and kaleido, which need a Chromium. Where they are missing (as on a
plain Binder), it raises `ExportError` with a message explaining what to install. `view.figure()`
returns the plotly figure if you want to restyle it. Both files are written to the working
folder.""",
    ),
    (
        "code",
        """from attnviz.widgets.export import ExportError

html_file = view.to_html("attention.html")
print(f"{html_file}: {html_file.stat().st_size / 1024:.0f} KiB")
try:
    png_file = view.to_png("attention.png")
    print(f"{png_file}: {png_file.stat().st_size / 1024:.0f} KiB")
except ExportError as err:
    print(f"no PNG: {err}")""",
    ),
    (
        "md",
        """Next, `02_qk_pairs.ipynb` explains *why* heads attend where they do, in terms of pairs of
query and key features.""",
    ),
]

QK_PAIRS = [
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

QK_FROM_SCRATCH = [
    (
        "md",
        """# QK transcoders from scratch

Why does a head attend where it does? A *QK transcoder* answers in features: a query
encoder-decoder and a key encoder-decoder read the residual stream before the layer and output the
layer's queries and keys, trained not to reconstruct q and k but to reproduce the **attention
pattern** (KL per query row). Step 2 then finds the few *query feature x key feature* pairs that
matter to each head.

This notebook runs everything on a laptop CPU with the embedded SmolLM2-135M (rotary positions,
grouped-query attention: 9 query heads share 3 key/value heads): collect activations, train a small
transcoder pair, train the pair mask, and read what one head's top pairs fire on.""",
    ),
    (
        "code",
        """import torch
import attnviz
from attnviz.data import collect_activations

torch.manual_seed(0)
model = attnviz.load_model()          # SmolLM2-135M-Instruct, offline
LAYER = 3
store = collect_activations(model, "pydocs", layer=LAYER, n_tokens=24_576, n_ctx=128,
                            out_dir="activations/tutorial-L3", fields=("resid_normed", "q", "k"))
store""",
    ),
    (
        "md",
        """## Step 1: the transcoders

The loss is `3 KL(true || q̂k̂) + KL(true || q̂k) + KL(true || qk̂)` plus an L0.5 sparsity penalty.
Dead features are resampled and revived by rescaled ghost grads. Small settings here (256 features
each, 120 steps); the shipped dictionaries use 1024 features and 1000 steps.""",
    ),
    (
        "code",
        """from attnviz.training.config import QKTrainConfig
from attnviz.training.qk import QKTrainer

cfg = QKTrainConfig(d_hidden_q=256, d_hidden_k=256, tokens=120 * 16 * 128, batch_contexts=16,
                    sparsity=1.5e-2, warmup_steps=30, resample_every=60, dead_window=30,
                    eval_every=40, checkpoint_every=40)
trainer = QKTrainer(store, model.rotary(LAYER, 128), cfg, "runs/tutorial-qk-L3")
qk = trainer.run()
[h for h in trainer.state.history if "eval_kl" in h][-1]""",
    ),
    (
        "md",
        """## Step 2: which pairs matter

A mask over (query feature, key feature, head) is fitted to the true pattern with the transcoders
frozen, and an L0.5 penalty pushes unneeded pairs to zero. For a rotary model a pair's
contribution depends on the distance between the two tokens; attnviz computes it from the active
features and rotated decoder rows only.""",
    ),
    (
        "code",
        """from attnviz.training.mask import MaskTrainConfig, train_pair_mask

qk.pairs = train_pair_mask(qk, store, model.rotary(LAYER, 128),
                           cfg=MaskTrainConfig(contexts=12, n_ctx=48, steps=120))
print(f"kept {qk.pairs.nnz:,} pairs of {qk.pairs.shape[0] * qk.pairs.shape[1] * qk.pairs.shape[2]:,}"
      f" ({qk.pairs.fraction_kept:.3%})")""",
    ),
    (
        "md",
        """## How good is it?

Patch the reconstructed pattern into every head of the layer and see how much of the damage of
ablating the pattern (uniform causal, or the mean pattern) it recovers.""",
    ),
    (
        "code",
        """from attnviz.analysis.qk_report import evaluate_qk

held_out = list(store.batches(4, ("tokens",), shuffle=False, by="context",
                              chunks=[len(store.chunks) - 1]))[:1]
report = evaluate_qk(model, qk, [b["tokens"] for b in held_out], pairs=qk.pairs)
report.table()[["l0_q", "l0_k", "live_q", "live_k", "kl_mean", "ce_recovered_uniform",
                "masked_kl_mean", "masked_ce_recovered_uniform", "pairs_kept"]]""",
    ),
    (
        "md",
        """## The top pairs of one head

Raw map weights ignore how strongly and how often two features co-occur (in the right order), so
pairs are ranked by what they contribute to the scores on real text.""",
    ),
    (
        "code",
        """from attnviz.analysis.qk import rank_pairs

tokens = held_out[0]["tokens"]
acts = model.attention(tokens, LAYER, ["resid_normed"])
with torch.no_grad():
    f_q, f_k = qk.encode(acts.resid_normed)
ranked = rank_pairs(qk, qk.pairs, f_q, f_k, model.rotary(LAYER, tokens.shape[1]))
HEAD = int(ranked.iloc[0]["head"])
ranked[ranked["head"] == HEAD].head(8)""",
    ),
    (
        "md",
        """## What the top pair's features fire on

Max-activating contexts for the query feature (at the destination) and the key feature (at the
source) of the head's strongest pair.""",
    ),
    (
        "code",
        """from attnviz.analysis.feature_examples import max_activating_examples

top = ranked[ranked["head"] == HEAD].iloc[0]
batches = [b["tokens"] for b in store.batches(8, ("tokens",), shuffle=False, by="context")][:4]
for side, feature in (("q", int(top["q_feature"])), ("k", int(top["k_feature"]))):
    examples = max_activating_examples(model, qk, feature, side, batches, k=5, window=6)
    print(f"{side} feature {feature}:")
    for _, row in examples.iterrows():
        before = "".join(t for t, _ in row["before"])
        after = "".join(t for t, _ in row["after"])
        print(f"  {row['activation']:6.2f}  ...{before}[[{row['token']}]]{after}...")""",
    ),
    (
        "md",
        """## The shipped transcoders

attnviz ships trained QK transcoders (1024 features each, with their pair masks) for layers 3, 15
and 25 of the embedded model, so you can skip training:""",
    ),
    (
        "code",
        """from attnviz.dictionaries.pretrained import list_pretrained, load_pretrained_qk
import pandas as pd

pd.DataFrame(list_pretrained())""",
    ),
]


def build(cells: list[tuple[str, str]], path: Path) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells
    ]
    # Stable cell ids, so rebuilding a notebook changes only the cells whose text changed.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{path.stem[:40]}-{i:02d}"
    nbformat.write(nb, path)


def main() -> None:
    build(ATTENTION_PATTERNS, HERE / "01_attention_patterns.ipynb")
    build(QK_PAIRS, HERE / "02_qk_pairs.ipynb")
    build(QK_FROM_SCRATCH, HERE / "03_qk_transcoders_from_scratch.ipynb")


if __name__ == "__main__":
    main()
