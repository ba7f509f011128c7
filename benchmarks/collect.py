"""Tokens/s of collecting one layer's attention activations: stopping the forward pass at that
layer versus running the whole model, on the embedded SmolLM2-135M, for both backends.

The full forward also computes the 49,152-wide logits, which on this small model cost about as
much as eight layers, so stopping early saves more than the share of layers skipped.

The two variants alternate within one run (A B A B ...) and the figure that matters is the
ratio of each pair, which holds when a shared machine's speed drifts.

    .venv/bin/python benchmarks/collect.py [--layers 3 15] [--rounds 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import attnviz
from attnviz.data.contexts import batched_contexts
from attnviz.data.corpora import get_corpus

RESULTS = Path(__file__).parent / "results" / "collect.json"
FIELDS = ("resid_normed", "q", "k")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_collect(adapter, batch, layer: int, stop: bool) -> float:
    _sync(adapter.device)
    start = time.perf_counter()
    adapter.attention(batch, layer, FIELDS, stop=stop)
    _sync(adapter.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 15])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=128)
    parser.add_argument("--device", default=None)
    parser.add_argument("--backends", nargs="+", default=["transformer_lens", "nnsight"])
    args = parser.parse_args()

    adapters = {b: attnviz.load_model(backend=b, device=args.device) for b in args.backends}
    first = next(iter(adapters.values()))
    batch = next(
        batched_contexts(
            get_corpus("pydocs"),
            first.tokenizer,
            args.n_ctx,
            first.spec.bos_token_id,
            args.batch_size,
        )
    ).to(first.device)
    n_tokens = batch.numel()
    rows = []
    for backend, adapter in adapters.items():
        for layer in args.layers:
            time_collect(adapter, batch, layer, True)  # warm-up
            time_collect(adapter, batch, layer, False)
            stopped, full = [], []
            for _ in range(args.rounds):
                stopped.append(time_collect(adapter, batch, layer, True))
                full.append(time_collect(adapter, batch, layer, False))
            ratios = [f / s for s, f in zip(stopped, full, strict=True)]
            row = {
                "backend": backend,
                "layer": layer,
                "tokens_per_batch": n_tokens,
                "stop_at_layer_tok_s": n_tokens / statistics.median(stopped),
                "full_forward_tok_s": n_tokens / statistics.median(full),
                "speedup_median": statistics.median(ratios),
                "speedup_min": min(ratios),
                "speedup_max": max(ratios),
            }
            rows.append(row)
            print(
                f"{backend:>16} layer {layer:>2}: stop-at-layer {row['stop_at_layer_tok_s']:8,.0f} "
                f"tok/s, full forward {row['full_forward_tok_s']:8,.0f} tok/s, speed-up "
                f"{row['speedup_median']:.2f}x (min {row['speedup_min']:.2f}, max "
                f"{row['speedup_max']:.2f})"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "collect",
        "model": first.spec.name,
        "device": str(first.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "batch": [args.batch_size, args.n_ctx],
        "rounds": args.rounds,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
