"""Train the attention SAEs attnviz ships for the embedded SmolLM2-135M and write them fp16 (in
SAELens's format) into attnviz/pretrained/: hook_z SAEs at three depths chosen by computation,
and one residual-stream SAE at the middle layer among them.

    .venv/bin/python scripts/ship_attention_saes.py [--layers auto | L1 L2 L3] [--corpus debian-docs]

The depths: on repeated random sequences (analysis.patterns.head_scores), the layer with the
strongest induction head, the layer with the strongest previous-token head (induction heads read
what it writes), and the early layer (first third) with the strongest previous-token head. The
scores are printed and kept in each SAE's config ("training.chosen_because").

Everything is seeded; interrupted, it resumes from its stores and checkpoints (under runs/).
On 2 CPU cores: about 5 minutes of collection and 5 of training per layer.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import attnviz
from attnviz.analysis.patterns import head_scores
from attnviz.data import collect_activations
from attnviz.dictionaries.io import load_dictionary, save_dictionary
from attnviz.dictionaries.pretrained import TRAINED_N_CTX, pretrained_dir
from attnviz.training.config import SAETrainConfig
from attnviz.training.sae import SAETrainer

Z_SAE = SAETrainConfig(
    site="z", architecture="topk", d_sae=2048, k=16, lr=1e-3, batch_contexts=16,
    tokens=2_000_000, warmup_steps=50, resample_every=0, ghost_grads=False, aux_k=256,
    dead_window=100, eval_every=100, checkpoint_every=100, seed=0,
)  # fmt: skip
"""TopK with AuxK (Gao et al. 2024): aux_k 256, about half the 576-wide input."""
RESID_SAE = dataclasses.replace(Z_SAE, site="resid_pre", k=32)


def choose_layers(adapter) -> tuple[list[int], dict[int, str]]:
    scores = head_scores(adapter, range(adapter.spec.n_layers))
    best = lambda frame, col: frame.loc[frame[col].idxmax()]  # noqa: E731
    induction = best(scores, "induction")
    previous = best(scores, "previous")
    early = best(scores[scores.layer < adapter.spec.n_layers // 3], "previous")
    why = {}
    for row, what in ((early, "previous"), (previous, "previous"), (induction, "induction")):
        layer = int(row.layer)
        why.setdefault(layer, f"head {int(row['head'])} {what} score {row[what]:.2f}")
    print(scores.sort_values("induction", ascending=False).head(5).round(3).to_string(index=False))
    print(scores.sort_values("previous", ascending=False).head(5).round(3).to_string(index=False))
    layers = sorted(why)
    print("chosen:", "; ".join(f"layer {layer}: {why[layer]}" for layer in layers))
    return layers, why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", nargs="+", default=["auto"], help="'auto' or layer numbers")
    parser.add_argument("--work", default="runs/ship-sae", help="stores and checkpoints")
    parser.add_argument("--corpus", default="debian-docs", help="corpus to collect from")
    parser.add_argument("--contexts", type=int, default=2000, help="training contexts of 128")
    args = parser.parse_args()
    work = Path(args.work)
    adapter = attnviz.load_model()
    if args.layers == ["auto"]:
        layers, why = choose_layers(adapter)
    else:
        layers = [int(x) for x in args.layers]
        why = {layer: "chosen by hand" for layer in layers}
    middle = layers[len(layers) // 2]
    for layer in layers:
        fields = ("z", "v", "resid_pre") if layer == middle else ("z", "v")
        store = collect_activations(
            adapter, args.corpus, layer=layer, n_tokens=args.contexts * TRAINED_N_CTX,
            n_ctx=TRAINED_N_CTX, batch_size=16, out_dir=work / f"store-L{layer}", fields=fields,
            dtype="float16",
        )  # fmt: skip
        runs = [("z-sae", Z_SAE)] + ([("resid-sae", RESID_SAE)] if layer == middle else [])
        for name, cfg in runs:
            run_dir = work / f"{name}-L{layer}"
            SAETrainer(store, cfg, run_dir).run()
            sae = load_dictionary(run_dir / "dictionary")
            sae.cfg.training["chosen_because"] = why[layer]
            target = pretrained_dir(adapter.spec.name) / f"{name}-L{layer}"
            save_dictionary(sae, target, dtype=torch.float16)
            print(f"wrote {target}")


if __name__ == "__main__":
    main()
