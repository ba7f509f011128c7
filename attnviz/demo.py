"""`attnviz demo` / `make demo`: the main job, end to end, on the embedded model.

Load the model, collect one layer's attention activations from the offline corpus (progress bar,
resumable), read them back from disk, rebuild the attention patterns from the stored q and k and
print per-head statistics.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
import torch

from attnviz.analysis.patterns import pattern_summary


def run_demo(args: argparse.Namespace) -> pd.DataFrame:
    import attnviz
    from attnviz.data.collect import collect_activations
    from attnviz.data.corpora import get_corpus

    print(
        f"attnviz {attnviz.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    corpus = get_corpus(args.corpus)  # a bad corpus fails before the model loads
    start = time.perf_counter()
    adapter = attnviz.load_model(args.model, backend=args.backend, device=args.device)
    print(f"loaded {adapter} in {time.perf_counter() - start:.1f} s")

    out = args.out or tempfile.mkdtemp(prefix="attnviz-demo-")
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    for needed in ("q", "k"):
        if needed not in fields:
            fields = (*fields, needed)
    start = time.perf_counter()
    store = collect_activations(
        adapter,
        corpus,
        layer=args.layer,
        n_tokens=args.tokens,
        out_dir=out,
        fields=fields,
        n_ctx=args.n_ctx,
        batch_size=args.batch_size,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    print(
        f"collected {len(store):,} tokens ({store.n_contexts} contexts of {args.n_ctx}) of layer "
        f"{args.layer} from corpus {corpus.name!r} in {seconds:.1f} s = "
        f"{len(store) / seconds:,.0f} tokens/s -> {out}"
    )

    # Patterns are rebuilt from the stored q and k, not stored: [heads, ctx, ctx] per context
    # would be n_heads * n_ctx times larger than q.
    frames = []
    checked = False
    for batch in store.batches(16, fields=("tokens", "q", "k"), shuffle=False, by="context"):
        q, k = batch["q"].float(), batch["k"].float()
        pattern = adapter.pattern_from_qk(q, k, args.layer)
        if not checked:  # the stored activations reproduce the model's own pattern
            live = adapter.attention(batch["tokens"][:1].long(), args.layer, ["pattern"]).pattern
            assert live is not None
            err = (live - pattern[:1]).abs().max().item()
            print(f"pattern rebuilt from stored q, k vs the model's own: max |diff| = {err:.1e}")
            checked = True
        frames.append(pattern_summary(pattern, layer=args.layer).assign(weight=len(q)))
    table = _weighted_mean(pd.concat(frames))
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(f"\nper-head attention statistics, layer {args.layer} ({store.n_contexts} contexts):")
        print(table.to_string(index=False))
    sink = table.loc[table.first_token.idxmax()]
    print(
        f"\nhead {int(sink['head'])} puts {sink.first_token:.0%} of its attention on the first "
        f"token; mean entropy over heads is {table.entropy_frac.mean():.0%} of uniform."
    )
    return table


def _weighted_mean(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["layer", "head"]
    values = [c for c in frame.columns if c not in (*keys, "weight")]
    weighted = frame[values].mul(frame["weight"], axis=0)
    weighted[keys] = frame[keys]
    sums = weighted.groupby(keys).sum()
    totals = frame.groupby(keys)["weight"].sum()
    return sums.div(totals, axis=0).reset_index()
