"""Train the QK transcoders (and their pair masks, and the L2 baselines) that attnviz ships for
the embedded SmolLM2-135M, and write them fp16 into attnviz/pretrained/.

    .venv/bin/python scripts/ship_qk_transcoders.py --layers 3 15 25

Everything is seeded; a run interrupted at any point resumes from its checkpoints (work files
live under runs/ship/). On 2 CPU cores each layer takes about ten minutes (transcoders, mask, baseline).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import attnviz
from attnviz.data import collect_activations
from attnviz.dictionaries.io import load_qk, save_qk
from attnviz.dictionaries.pretrained import pretrained_dir
from attnviz.training.config import QKTrainConfig
from attnviz.training.mask import MaskTrainConfig, train_pair_mask
from attnviz.training.qk import QKTrainer

SHIPPED = QKTrainConfig(
    d_hidden_q=1024, d_hidden_k=1024, lr=1e-3, sparsity=1.5e-2, batch_contexts=16,
    tokens=1_228_800, warmup_steps=100, resample_every=250, dead_window=100, eval_every=100,
    checkpoint_every=100, seed=0,
)  # fmt: skip
MASK = MaskTrainConfig(contexts=24, n_ctx=64, steps=150, lr=1e-2, mask_reg=2e-6, threshold=1e-2)
N_CTX = 128
COLLECT_TOKENS = 262_144


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 15, 25])
    parser.add_argument("--work", default="runs/ship", help="stores and checkpoints")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--masks", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--wide-baselines", type=int, nargs="*", default=[],
        help="extra L2 baseline widths, kept under --work (benchmarks/qk_quality.py reads them)",
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(args.work)
    adapter = attnviz.load_model()
    for layer in args.layers:
        store = collect_activations(
            adapter, "pydocs", layer=layer, n_tokens=COLLECT_TOKENS, n_ctx=N_CTX, batch_size=16,
            out_dir=work / f"store-L{layer}", fields=("resid_normed", "q", "k"),
        )  # fmt: skip
        rotary = adapter.rotary(layer, N_CTX)
        runs = [("qk_transcoder", SHIPPED)]
        if args.baselines:  # the L2 q/k SAEs at equal width, for benchmarks/qk_quality.py
            runs.append(
                ("qk_sae", dataclasses.replace(SHIPPED, architecture="qk_sae", sparsity=3e-3))
            )
        for width in args.wide_baselines:
            wide = dataclasses.replace(
                SHIPPED, architecture="qk_sae", sparsity=3e-3, d_hidden_q=width, d_hidden_k=width
            )
            QKTrainer(store, rotary, wide, work / f"qk_sae-w{width}-L{layer}").run()
        for name, cfg in runs:
            run_dir = work / f"{name}-L{layer}"
            QKTrainer(store, rotary, cfg, run_dir).run()
            qk = load_qk(run_dir / "dictionary")
            if name == "qk_transcoder":
                if not args.masks:
                    print(f"layer {layer}: transcoders trained, not shipped without their mask")
                    continue
                qk.pairs = train_pair_mask(qk, store, rotary, work / f"mask-L{layer}", MASK)
            target = pretrained_dir(adapter.spec.name) / f"{name.replace('_', '-')}-L{layer}"
            save_qk(qk, target, dtype=torch.float16)
            print(f"wrote {target}")


if __name__ == "__main__":
    main()
