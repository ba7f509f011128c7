"""Quality of the shipped QK transcoders for the embedded SmolLM2-135M, beside the L2 q/k SAE
baseline of equal width and the figures Sharkey et al. (2024) report for GPT-2 small.

Evaluated on held-out documents (debian-docs's held-out split, by document; pydocs after the
trained contexts where that corpus is missing): L0 per transcoder, pairs kept and fraction
masked, per-head KL, and the fraction of the CE damage of ablating the layer's pattern (uniform
causal / mean) that patching in the reconstructed pattern recovers, for the transcoder and for
its masked pair map, beside the absolute loss increase (nats/token) and each ablation's damage,
with bootstrap intervals over contexts in the results file and a printed warning where the ratio
cannot be read alone. Beside the masked map: the KL of its bias terms alone (no pair kept) and
the share of the way from there to the transcoder's KL that the kept pairs go. Liveness on
--density-contexts contexts (100,000+ tokens): dead (firing on fewer than 1 in 100,000 tokens)
and rare (fewer than 1 in 10,000) fractions of each side.

    .venv/bin/python benchmarks/qk_quality.py [--contexts 256] [--density-contexts 800]

The narrow transcoder row comes from (after scripts/ship_qk_transcoders.py):

    .venv/bin/attnviz train qk --layer 15 --store runs/ship/store-L15 \
        --out runs/ship/qk_transcoder-w170-L15 --d-hidden-q 170 --d-hidden-k 170 \
        --sparsity 0.015 --tokens 1228800 --warmup-steps 100 --resample-every 250 \
        --dead-window 100 --eval-every 100 --checkpoint-every 100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

import attnviz
from attnviz.analysis.metrics import liveness
from attnviz.analysis.qk_report import evaluate_qk, qk_feature_density
from attnviz.dictionaries.io import load_qk
from attnviz.dictionaries.pretrained import (
    held_out_contexts,
    list_pretrained,
    load_pretrained_qk,
)

RESULTS = Path(__file__).parent / "results" / "qk_quality.json"
SEED_GPT2 = {
    "model": "gpt2-small (Sharkey et al. 2024)",
    "layers": "2 / 6 / 10",
    "d_hidden": 2400,
    "l0_per_transcoder": "14-20",
    "live_q / live_k": "144/524, 157/256, 270/466",
    "dead": "80-95%",
    "pairs_kept": "25k-51k (>99.9% masked)",
    "ce_recovered": "almost all (vs zero ablation, figure only)",
}
COLUMNS = [
    "architecture", "layer", "d_hidden_q", "l0_q", "l0_k", "live_q", "live_k", "kl_mean",
    "kl_p99", "loss_increase_recon", "ablation_damage_uniform", "ablation_damage_mean",
    "ce_recovered_uniform", "ce_recovered_mean", "pairs_kept", "pairs_fraction_masked",
    "masked_kl_mean", "bias_kl_mean", "pairs_share_of_kl_reduction", "loss_increase_masked",
    "masked_ce_recovered_uniform", "masked_ce_recovered_mean", "dead_q", "rare_q", "dead_k",
    "rare_k",
]  # fmt: skip
WARNINGS = [
    "ce_recovered_uniform_warning", "ce_recovered_mean_warning",
    "masked_ce_recovered_uniform_warning", "masked_ce_recovered_mean_warning",
    "pairs_share_warning",
]  # fmt: skip


def held_out_batches(adapter, n_contexts: int, batch: int = 8) -> list:
    held = held_out_contexts(adapter, n_contexts)
    return [held[i : i + batch] for i in range(0, len(held), batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=256, help="held-out contexts per layer")
    parser.add_argument(
        "--density-contexts", type=int, default=800,
        help="held-out contexts for dead / rare features (800 x 128 = 102,400 tokens)",
    )  # fmt: skip
    parser.add_argument("--work", default="runs/ship", help="where the ship script kept its runs")
    args = parser.parse_args()
    adapter = attnviz.load_model()
    batches = held_out_batches(adapter, args.contexts)
    density_batches = held_out_batches(adapter, args.density_contexts)
    shipped = [
        r for r in list_pretrained()
        if r["model"] == adapter.spec.name and r["architecture"] in ("qk_transcoder", "qk_sae")
    ]  # fmt: skip
    if not shipped:
        raise SystemExit("no shipped dictionaries: run scripts/ship_qk_transcoders.py first")
    rows, per_head = [], []
    # Other widths trained but not shipped, to compare quality per width (e.g. a transcoder ~6x
    # narrower than the L2 baseline): runs/ship/qk_<architecture>-w<width>-L<layer>/dictionary.
    jobs = [load_pretrained_qk(adapter.spec.name, e["layer"], e["architecture"]) for e in shipped]
    jobs += [load_qk(p) for p in sorted(Path(args.work).glob("qk_*-w*-L*/dictionary"))]
    densities = {}  # one forward pass per layer for all its dictionaries
    for layer in sorted({qk.cfg.layer for qk in jobs}):
        here = [qk for qk in jobs if qk.cfg.layer == layer]
        found, n_tokens = qk_feature_density(adapter, here, density_batches)
        print(f"layer {layer}: density over {n_tokens:,} held-out tokens", flush=True)
        densities.update({id(qk): d for qk, d in zip(here, found, strict=True)})
    for qk in jobs:
        start = time.perf_counter()
        report = evaluate_qk(adapter, qk, batches, pairs=qk.pairs)
        row = report.table().iloc[0].to_dict()
        row["eval_seconds"] = time.perf_counter() - start
        row["density_tokens"] = n_tokens
        for side, density in zip("qk", densities[id(qk)], strict=True):
            row.update({f"{k}_{side}": v for k, v in liveness(density).items()})
        rows.append(row)
        print(  # a run takes over an hour on 2 CPU cores: say where it is
            f"layer {row['layer']} {row['architecture']} ({row['d_hidden_q']}): KL "
            f"{row['kl_mean']:.3f}, dead q/k {row['dead_q']:.0%}/{row['dead_k']:.0%} "
            f"in {row['eval_seconds']:.0f} s",
            flush=True,
        )
        per_head.append(
            report.per_head.assign(architecture=qk.cfg.architecture, d_hidden_q=qk.cfg.d_hidden_q)
        )
    table = pd.DataFrame(rows).sort_values(["layer", "architecture", "d_hidden_q"])
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        print(table[[c for c in COLUMNS if c in table]].to_string(index=False))
        # A ratio over an ablation that does little damage misleads: say which ones, and why.
        for row in table.to_dict(orient="records"):
            for key in WARNINGS:
                if row.get(key):
                    print(f"  layer {row['layer']} {row['architecture']} {key}: {row[key]}")
        print("\nSharkey et al. (2024) on GPT-2 small, for comparison:")
        for k, v in SEED_GPT2.items():
            print(f"  {k}: {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "qk_quality",
        "model": adapter.spec.name,
        "held_out_contexts": args.contexts,
        "density_contexts": args.density_contexts,
        "rows": json.loads(table.to_json(orient="records")),
        "per_head": json.loads(pd.concat(per_head).to_json(orient="records")),
        "seed_gpt2": SEED_GPT2,
        "targets": {
            "l0_per_transcoder": "<= 20",
            "loss_increase_recon": "<= 0.005 nats/token (upper end of its interval <= 0.01)",
            "kl_mean": "<= 0.05",
            "live": ">= 90% of features at density >= 1e-5, both sides",
            "pairs_kept_fraction": "<= 0.005 with masked KL within 1.1x",
            "pairs_share_of_kl_reduction": ">= 0.7",
        },
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
