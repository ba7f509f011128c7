"""Cells of tutorial 01 attention patterns: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
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
there, and the widget says so when you select one. Choose **without first token** in the scale
menu: each row is then rescaled without BOS (in the kernel, at full precision), so whatever
attention these heads do spend on other tokens becomes visible. **log scale** helps with long
prompts, where every weight is small.""",
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
trait from Python updates a widget. Here a second widget is switched to the strongest
previous-token head found by the scan: it recomputes for the new layer, and its heatmap shows a
line just below the diagonal. The first widget stays on the induction head.""",
    ),
    (
        "code",
        """import numpy as np

from attnviz.widgets import decode_array

sent = decode_array(view.patterns)  # [heads, dest, src] as the browser decodes it; future = NaN
exact = model.attention(ids, LAYER, ["pattern"]).pattern[0].float().numpy()
print("largest difference from model.attention:", float(np.nanmax(np.abs(sent - exact))))
previous = AttentionView(model, PROMPT, layer=LAYER)
previous.layer, previous.head = PREV_LAYER, PREV_HEAD
print(f"the second widget shows layer {previous.layer} head {previous.head}")
previous""",
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

For a report there are three ways out, each showing what the widget shows now (the same head,
window and selection):

- `to_html` writes one self-contained HTML file with the script, the styles and the data all
  inside it. It opens offline, and hovering and choosing heads still work in it.
- `attnviz.report([...], path, title=...)` puts several widgets, with text between them, into one
  such file.
- `save_figure` writes `figure()` (a plotly figure you may also restyle) as PNG, SVG or PDF,
  chosen by the file's suffix, at a size and scale you give. `palette="colorblind"` redraws it in
  colours that every common colour-vision deficiency tells apart (cividis, blue-orange). The PDF
  embeds its fonts. Rendering goes through kaleido, which needs a Chromium; where one is missing,
  `ExportError` says what to install.

A notebook converted with `jupyter nbconvert --to html` shows each widget as it was when it was
displayed, with hover and head selection still working: a copy rides in the cell's output beside
the live widget (set `ATTNVIZ_STATIC_VIEWS=0` to leave it out). All these files are written to
the working folder.""",
    ),
    (
        "code",
        """import attnviz
from attnviz.widgets.export import ExportError

html_file = view.to_html("attention.html")
report_file = attnviz.report(
    [
        "The induction head the scan found, then the strongest previous-token head.",
        view,
        AttentionView(model, PROMPT, layer=PREV_LAYER, head=PREV_HEAD),
    ],
    "report.html",
    title="Induction in SmolLM2",
)
for path in (html_file, report_file):
    print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
try:
    for name in ("attention.png", "attention.svg", "attention.pdf"):
        out = view.save_figure(name, width=720, height=720, palette="colorblind")
        print(f"{out}: {out.stat().st_size / 1024:.0f} KiB")
except ExportError as err:
    print(f"no figure: {err}")""",
    ),
    (
        "md",
        """Next, `02_qk_pairs.ipynb` explains *why* heads attend where they do, in terms of pairs of
query and key features.""",
    ),
]
