"""`attnviz demo` / `make demo`: the main job, end to end, on the embedded model.

Load the model, collect one layer's attention activations from the offline corpus (progress bar,
resumable), read them back from disk, rebuild the attention patterns from the stored q and k and
print per-head statistics.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import pandas as pd
import torch

from attnviz.analysis.patterns import pattern_summary
from attnviz.data.collect import CollectConfig, collect_with_config


@dataclass
class DemoConfig(CollectConfig):
    """What `attnviz demo` is told: a collection, then the QK steps."""

    tokens: int = 32_768
    """How many tokens to collect."""
    qk_steps: int = 150
    """Steps of the small QK transcoder trained on what was collected (0: skip)."""
    eval_contexts: int = 8
    """Held-out contexts the shipped QK transcoders are evaluated on (0: skip)."""


def run_demo(args: DemoConfig) -> pd.DataFrame:
    import attnviz
    from attnviz.data.corpora import get_corpus

    print(
        f"attnviz {attnviz.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    corpus = get_corpus(args.corpus)  # a bad corpus fails before the model loads
    start = time.perf_counter()
    adapter = attnviz.load_model(args.model, backend=args.backend, device=args.device)
    print(f"loaded {adapter} in {time.perf_counter() - start:.1f} s")

    out = args.out or tempfile.mkdtemp(prefix="attnviz-demo-")
    start = time.perf_counter()
    store = collect_with_config(adapter, corpus, args, out, args.field_list(("q", "k")))
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
    if args.qk_steps > 0:
        _train_small_qk(adapter, store, args)
    _evaluate_shipped(adapter, args.eval_contexts)
    return table


def _train_small_qk(adapter, store, args: DemoConfig) -> None:
    """Step 1 of QK transcoder training (Sharkey et al. 2024) on the activations just collected: a small QK transcoder on the CPU."""
    from attnviz.training.config import QKTrainConfig
    from attnviz.training.qk import QKTrainer

    cfg = QKTrainConfig(
        d_hidden_q=256, d_hidden_k=256, tokens=args.qk_steps * 16 * args.n_ctx, batch_contexts=16,
        sparsity=1.5e-2, warmup_steps=30, resample_every=60, dead_window=30,
        eval_every=max(5, args.qk_steps // 5), checkpoint_every=50,
    )  # fmt: skip
    if len(store.chunks) < 2:  # the trainer holds the last chunk out for evaluation
        print(f"\n(skipping the QK transcoder: {len(store)} tokens fill one chunk; collect more)")
        return
    out = tempfile.mkdtemp(prefix="attnviz-demo-qk-")
    print(f"\ntraining a QK transcoder pair (2 x 256 features, {args.qk_steps} steps) -> {out}")
    start = time.perf_counter()
    trainer = QKTrainer(store, adapter.rotary(args.layer, args.n_ctx), cfg, out)
    trainer.run()
    seconds = time.perf_counter() - start
    evals = [h for h in trainer.state.history if "eval_kl" in h]
    first, last = evals[0], evals[-1]
    print(
        f"trained in {seconds:.0f} s ({cfg.tokens / seconds:,.0f} tokens/s): held-out pattern KL "
        f"{first['eval_kl']:.3f} -> {last['eval_kl']:.3f} nats/row, L0 {last['eval_l0_q']:.1f} "
        f"(query) / {last['eval_l0_k']:.1f} (key)"
    )


def _evaluate_shipped(adapter, n_contexts: int) -> None:
    """The shipped QK transcoders (and pair masks) on held-out text: the metric table."""
    from attnviz.analysis.qk_report import evaluate_qk
    from attnviz.dictionaries.pretrained import (
        held_out_contexts,
        list_pretrained,
        load_pretrained_qk,
    )

    shipped = [
        r for r in list_pretrained()
        if r["model"] == adapter.spec.name and r["architecture"] == "qk_transcoder"
    ]  # fmt: skip
    if not shipped or n_contexts <= 0:
        return
    held = held_out_contexts(adapter, n_contexts)
    batches = [held[i : i + 4] for i in range(0, len(held), 4)]
    print(f"\nshipped QK transcoders on {len(held)} held-out contexts of 128 tokens:")
    frames = []
    for entry in shipped:
        qk = load_pretrained_qk(adapter.spec.name, entry["layer"])
        frames.append(evaluate_qk(adapter, qk, batches, pairs=qk.pairs).table())
    cols = ["layer", "d_hidden_q", "l0_q", "l0_k", "live_q", "live_k", "kl_mean", "loss_increase_recon",
            "ce_recovered_uniform", "ce_recovered_mean", "pairs_kept", "masked_kl_mean",
            "masked_ce_recovered_uniform"]  # fmt: skip
    table = pd.concat(frames)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
        print(table[[c for c in cols if c in table]].to_string(index=False))


def _weighted_mean(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["layer", "head"]
    values = [c for c in frame.columns if c not in (*keys, "weight")]
    weighted = frame[values].mul(frame["weight"], axis=0)
    weighted[keys] = frame[keys]
    sums = weighted.groupby(keys).sum()
    totals = frame.groupby(keys)["weight"].sum()
    return sums.div(totals, axis=0).reset_index()
