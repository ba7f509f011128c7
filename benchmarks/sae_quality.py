"""How good the shipped attention SAEs are, on held-out documents (debian-docs:heldout):
L0, FVU (relative to the mean), dead features (< 1 in 100,000 tokens) and dense ones (> 10%),
CE recovered when the reconstruction is spliced in, against zero- and mean-ablation of the
site, with bootstrap intervals over contexts and the absolute loss increase, beside the
per-layer L0 Kissane et al. (2024) report for GPT-2 small.

Goals (issue): L0 <= 20 with CE recovered >= 80% vs zero ablation, FVU <= 0.2, dead <= 10%.

    .venv/bin/python benchmarks/sae_quality.py [--contexts 800] [--ce-contexts 64] [--names v-sae-L17 ...]

With --names, only those SAEs are measured and their rows replace the same names' rows in the
results file (the others are kept as last measured).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

import attnviz
from attnviz.analysis.sae_report import evaluate_sae
from attnviz.dictionaries.io import load_dictionary
from attnviz.dictionaries.pretrained import HELD_OUT_CORPUS, held_out_contexts, list_pretrained
from attnviz.models.adapter import SPLICE_SITES

RESULTS = Path(__file__).parent / "results" / "sae_quality.json"
PAPER_L0_GPT2_SMALL = [3, 23, 16, 15, 14, 17, 17, 19, 23, 23, 14, 9.4]
"""Kissane et al. 2024, hook_z SAEs of GPT-2 small, layers 0-11 (24,576 latents, 1e8 tokens)."""
GOALS = {"l0": 20, "ce_recovered_zero": 0.8, "fvu": 0.2, "dead": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--contexts", type=int, default=800, help="held-out contexts for L0/FVU/density"
    )
    parser.add_argument(
        "--ce-contexts", type=int, default=64, help="of those, used for CE (4 passes each)"
    )
    parser.add_argument("--names", nargs="*", help="measure only these shipped SAEs")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = attnviz.load_model()
    held = held_out_contexts(model, args.contexts)
    rows = []
    for entry in list_pretrained(model.spec.name):
        if entry["architecture"] not in ("standard", "topk", "jumprelu"):
            continue
        if args.names and entry["name"] not in args.names:
            continue
        sae = load_dictionary(entry["path"], model=model)
        start = time.perf_counter()
        full = evaluate_sae(model, sae, held.split(16), ce=False)
        splicable = sae.cfg.site in SPLICE_SITES and len(sae.cfg.layers) == 1
        ce = evaluate_sae(model, sae, held[: args.ce_contexts].split(8), ce=splicable)
        row = {
            "name": entry["name"], "site": sae.cfg.site, "layer": entry["layer"],
            "d_sae": sae.cfg.d_sae, "architecture": sae.cfg.architecture,
            "l0": full.l0, "fvu": full.fvu, "dead": full.dead_fraction, "dense": full.dense_fraction,
            "tokens": full.n_tokens, "density_histogram": full.density_histogram(),
            "chosen_because": sae.cfg.training.get("chosen_because"),
        }  # fmt: skip
        summary = ce.summary()
        row |= {k: v for k, v in summary.items() if k.startswith(("ce_", "loss_", "ablation_"))}
        row["ce_contexts"] = args.ce_contexts
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(f"{entry['name']}: done in {row['seconds']:.0f} s")
    table = pd.DataFrame(rows)
    cols = ["name", "l0", "fvu", "dead", "dense", "tokens", "ce_recovered_zero",
            "ce_recovered_zero_lo", "ce_recovered_zero_hi", "ce_recovered_mean", "loss_increase",
            "loss_increase_lo", "loss_increase_hi", "ablation_damage_zero", "ablation_damage_mean"]  # fmt: skip
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 250):
        print(table[[c for c in cols if c in table]].to_string(index=False))
    for row in rows:
        for key in ("ce_zero_warning", "ce_mean_warning"):
            if row.get(key):
                print(f"{row['name']} {key}: {row[key]}")
    print(f"Kissane et al. 2024, GPT-2 small hook_z SAE L0 per layer: {PAPER_L0_GPT2_SMALL}")
    print(f"goals: {GOALS}")
    RESULTS.parent.mkdir(exist_ok=True)
    if args.names and RESULTS.exists():
        kept = [r for r in json.loads(RESULTS.read_text())["rows"] if r["name"] not in args.names]
        rows = kept + rows
    record = {
        "model": model.spec.name, "held_out": HELD_OUT_CORPUS,
        "load_average": os.getloadavg(), "goals": GOALS,
        "paper_gpt2_small_l0": PAPER_L0_GPT2_SMALL, "rows": rows,
    }  # fmt: skip
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
