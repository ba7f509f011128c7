"""Speed of QK dictionaries: training tokens/s (pattern-KL transcoders and the L2 q/k SAE
baseline, two widths) on the embedded SmolLM2-135M, then the sparse-vs-dense pair-score sweep of
benchmarks/qk_pair_scores.py (time and memory as the context grows).

    .venv/bin/python benchmarks/qk_speed.py [--steps 30] [--device cuda] [--no-pair-scores]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import attnviz
from attnviz.data import collect_activations
from attnviz.training.config import QKTrainConfig
from attnviz.training.qk import QKTrainer

RESULTS = Path(__file__).parent / "results" / "qk_speed.json"
LAYER, N_CTX, BATCH = 3, 128, 16


def training_rate(store, rotary, cfg: QKTrainConfig, steps: int, device) -> dict:
    with tempfile.TemporaryDirectory() as out:
        trainer = QKTrainer(store, rotary, cfg, out, device)
        batches = trainer._batches(trainer.train_chunks, shuffle=True, seed=0)
        batch = next(iter(batches))
        trainer.step(batch)  # warm-up
        times = []
        for _ in range(steps):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.step(batch)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    tokens = BATCH * N_CTX
    return {
        "architecture": cfg.architecture,
        "d_hidden": cfg.d_hidden_q,
        "ghost_grads": cfg.ghost_grads,
        "step_s_median": statistics.median(times),
        "tokens_per_s": tokens / statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default=None)
    parser.add_argument("--pair-scores", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    adapter = attnviz.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        store = collect_activations(
            adapter, "pydocs", layer=LAYER, n_tokens=BATCH * N_CTX * 4, n_ctx=N_CTX,
            out_dir=Path(tmp) / "store", chunk_contexts=BATCH, progress=False,
        )  # fmt: skip
        rotary = adapter.rotary(LAYER, N_CTX)
        base = QKTrainConfig(batch_contexts=BATCH)
        rows = []
        for d_hidden in (256, 1024):
            for arch in ("qk_transcoder", "qk_sae"):
                cfg = dataclasses.replace(
                    base, architecture=arch, d_hidden_q=d_hidden, d_hidden_k=d_hidden
                )
                row = training_rate(store, rotary, cfg, args.steps, args.device)
                rows.append(row)
                print(
                    f"{arch:>14} d_hidden {d_hidden:>5}: {row['tokens_per_s']:8,.0f} tokens/s "
                    f"({row['step_s_median'] * 1000:.0f} ms per step of {BATCH}x{N_CTX})"
                )
    record = {
        "benchmark": "qk_speed",
        "model": adapter.spec.name,
        "layer": LAYER,
        "device": str(
            torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "training": rows,
    }
    if args.pair_scores:
        script = Path(__file__).parent / "qk_pair_scores.py"
        extra = ["--device", args.device] if args.device else []
        subprocess.run([sys.executable, str(script), *extra], check=True)
        pair = json.loads((Path(__file__).parent / "results" / "qk_pair_scores.json").read_text())
        record["pair_scores"] = pair
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
