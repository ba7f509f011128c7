"""Train the value SAEs attnviz ships for the embedded SmolLM2-135M and write them fp16 (in
SAELens's format) into attnviz/pretrained/: one on each of two layers' concatenated value heads,
and one on the two layers together (Anthropic's attention update, 2025, trained its two-layer
SAE on its model's two induction layers).

    .venv/bin/python scripts/ship_value_saes.py [--layers auto | L1 L2] [--corpus debian-docs]

The layers: on repeated random sequences (analysis.patterns.head_scores), the two layers whose
best head has the highest induction score; the scores are printed and kept in each SAE's config
("training.chosen_because"). Both layers are collected over the same contexts, so the two-layer
SAE reads them side by side (data.stacked_store). TopK with AuxK (Gao et al. 2024).

Everything is seeded; interrupted, it resumes from its stores and checkpoints (under runs/).
On 2 CPU cores: about 5 minutes of collection per layer and 2 of training per SAE.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import attnviz
from attnviz.analysis.patterns import head_scores
from attnviz.data import collect_activations
from attnviz.data.stacked_store import StackedStore
from attnviz.dictionaries.io import load_dictionary, save_dictionary
from attnviz.dictionaries.pretrained import TRAINED_N_CTX, pretrained_dir
from attnviz.training.config import SAETrainConfig
from attnviz.training.sae import SAETrainer

V_SAE = SAETrainConfig(
    site="v", architecture="topk", d_sae=2048, k=32, lr=1e-3, batch_contexts=16,
    tokens=2_000_000, warmup_steps=50, resample_every=0, ghost_grads=False, aux_k=96,
    dead_window=100, eval_every=100, checkpoint_every=100, seed=0,
)  # fmt: skip
"""aux_k 96: half the 192-wide input (Gao et al.'s rule when the input is narrower than 1024)."""
TWO_LAYER_V_SAE = dataclasses.replace(V_SAE, d_sae=4096, aux_k=192)
"""Twice the features at the same L0: room for both layers' features if they stay apart."""


def choose_layers(adapter) -> tuple[list[int], dict[int, str]]:
    scores = head_scores(adapter, range(adapter.spec.n_layers))
    best = scores.loc[scores.groupby("layer")["induction"].idxmax()]
    top = best.sort_values("induction", ascending=False).head(2)
    print(top.round(3).to_string(index=False))
    why = {
        int(r.layer): f"head {int(r['head'])} induction score {r.induction:.2f}"
        for _, r in top.iterrows()
    }
    return sorted(why), why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", nargs="+", default=["auto"], help="'auto' or two layers")
    parser.add_argument("--corpus", default="debian-docs", help="corpus to collect from")
    parser.add_argument("--contexts", type=int, default=2000, help="training contexts of 128")
    parser.add_argument("--work", default="runs/ship-sae", help="stores and checkpoints")
    args = parser.parse_args()
    work = Path(args.work)
    adapter = attnviz.load_model()
    if args.layers == ["auto"]:
        layers, why = choose_layers(adapter)
    else:
        layers = [int(x) for x in args.layers]
        why = {layer: "chosen by hand" for layer in layers}
    if len(layers) != 2:
        raise SystemExit(f"give two layers, not {layers}")
    stores = [
        collect_activations(
            adapter,
            args.corpus,
            layer=layer,
            n_tokens=args.contexts * TRAINED_N_CTX,
            n_ctx=TRAINED_N_CTX,
            batch_size=16,
            out_dir=work / f"store-L{layer}",
            fields=("z", "v"),
            dtype="float16",
        )
        for layer in layers
    ]
    runs = [
        (f"v-sae-L{layer}", V_SAE, store, why[layer])
        for layer, store in zip(layers, stores, strict=True)
    ]
    both = "; ".join(f"layer {layer}: {why[layer]}" for layer in layers)
    runs.append((f"v-sae-L{layers[0]}+L{layers[1]}", TWO_LAYER_V_SAE, StackedStore(stores), both))
    for name, cfg, store, because in runs:
        run_dir = work / name
        SAETrainer(store, cfg, run_dir).run()
        sae = load_dictionary(run_dir / "dictionary")
        sae.cfg.training["chosen_because"] = because
        target = pretrained_dir(adapter.spec.name) / name
        save_dictionary(sae, target, dtype=torch.float16)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
