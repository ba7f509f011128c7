"""Cells of tutorial 03 QK transcoders from scratch: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
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
                           cfg=MaskTrainConfig(contexts=8, n_ctx=48, steps=120))
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
