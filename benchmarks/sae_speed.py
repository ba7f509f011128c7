"""SAE speed, side by side in one run on this machine:

1. Training: tokens/s of one attnviz training step (the shared loop's step: topk SAE, unit-norm
   decoder, firing trackers) against SAELens's TopKTrainingSAE of the same shape (forward,
   backward, Adam) on the same batches of hook_z activations of the embedded model; steps
   alternate A/B, medians and their ratio are reported with the load average.
2. Direct feature attribution for a whole prompt: for every destination, the DFA of the features
   active there (heads x sources each), at 256, 1024 and 2048 tokens; attnviz projects the values
   onto each head's encoder block once, the reference builds the [dest, src, n_heads * d_head]
   tensor of per-source head outputs (as dashboards do) and dots it with the encoder; time and
   peak memory (tracemalloc cannot see torch, so peak RSS growth is measured in a subprocess).

    .venv/bin/python benchmarks/sae_speed.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "sae_speed.json"
LAYER, D_SAE, K, BATCH = 2, 2048, 16, 16


def training(steps: int) -> dict:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    import attnviz
    from attnviz.data import collect_activations
    from attnviz.training.config import SAETrainConfig
    from attnviz.training.sae import SAETrainer

    model = attnviz.load_model()
    work = Path("runs/bench-sae")
    store = collect_activations(
        model, "pydocs", layer=LAYER, n_tokens=64 * 128 * 4, n_ctx=128, out_dir=work / "store",
        fields=("z",), progress=False,
    )  # fmt: skip
    cfg = SAETrainConfig(site="z", architecture="topk", d_sae=D_SAE, k=K, batch_contexts=BATCH,
                         tokens=10**9, resample_every=0, ghost_grads=False, eval_every=0,
                         checkpoint_every=0)  # fmt: skip
    ours = SAETrainer(store, cfg, work / "ours", device="cpu")
    lens = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=9 * 64, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam(lens.parameters(), lr=1e-3, betas=(0.0, 0.999))
    batches = list(ours._batches(ours.train_chunks, shuffle=True, seed=0))
    times: dict[str, list[float]] = {"attnviz": [], "sae_lens": []}
    n_tokens = BATCH * 127
    for i in range(steps + 3):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        ours.step(batch)
        a = time.perf_counter() - start
        x = batch["z"][:, 1:].flatten(0, 1).flatten(1)
        start = time.perf_counter()
        out = lens.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients={},
                dead_neuron_mask=None,
                n_training_steps=i,
                is_logging_step=False,
            )
        )
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        b = time.perf_counter() - start
        if i >= 3:  # warm-up steps left out
            times["attnviz"].append(a)
            times["sae_lens"].append(b)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "tokens_per_step": n_tokens, "d_in": 576, "d_sae": D_SAE, "k": K, "steps": steps,
        "tokens_per_s": {k: n_tokens / v for k, v in med.items()},
        "median_step_s": med, "ratio_attnviz_over_sae_lens": med["sae_lens"] / med["attnviz"],
    }  # fmt: skip


def dfa_run(n: int, method: str) -> dict:
    """One DFA timing in this process (run in a subprocess per case, for its peak memory)."""
    import resource

    from attnviz.analysis.dfa import remainder
    from attnviz.dictionaries.sae import SAE, SAEConfig

    torch.manual_seed(0)
    heads, kv, d_head = 9, 3, 64
    sae = SAE(SAEConfig("topk", "m", "z", [LAYER], heads * d_head, D_SAE, heads, d_head, k=K))
    scores = torch.randn(heads, n, n).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -1e9)
    pattern, v = scores.softmax(-1), torch.randn(n, kv, d_head)
    kv_of = torch.arange(heads) // (heads // kv)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        z = torch.einsum("hts,shd->thd", pattern, v[:, kv_of]).flatten(1)
        active = sae.encode(z).topk(K, dim=-1).indices  # [dest, K] features per destination
        if method == "attnviz":
            W = sae.W_enc.reshape(heads, d_head, D_SAE)
            proj = torch.einsum("shd,hdf->fhs", v[:, kv_of], W)  # once for the prompt
            cells = proj[active] * pattern.permute(1, 0, 2)[:, None]  # [dest, K, heads, src]
        else:
            per_src = (pattern.permute(1, 2, 0)[..., None] * v[:, kv_of][None]).flatten(2)
            # [dest, src, heads*d_head] -> each head's block dotted with each active feature
            blocks = per_src.unflatten(-1, (heads, d_head))
            W = sae.W_enc.reshape(heads, d_head, D_SAE)
            cells = torch.stack([torch.einsum("shd,hdk->khs", blocks[t], W[:, :, active[t]])
                                 for t in range(n)])  # fmt: skip
        total = cells.sum((-1, -2)) + remainder(sae, active.flatten()).view(n, K)
    seconds = time.perf_counter() - start
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    check = float(total.sum())
    return {
        "n": n,
        "method": method,
        "seconds": seconds,
        "peak_rss_growth_mb": peak_mb,
        "check": check,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dfa-case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dfa_case:
        print(json.dumps(dfa_run(int(args.dfa_case[0]), args.dfa_case[1])))
        return
    record: dict = {"threads": torch.get_num_threads(), "load_average_before": os.getloadavg()}
    record["training"] = training(args.steps)
    t = record["training"]
    print(f"training step, {t['tokens_per_step']} tokens, d_sae {D_SAE}, k {K}: attnviz "
          f"{t['tokens_per_s']['attnviz']:,.0f} tok/s, sae_lens {t['tokens_per_s']['sae_lens']:,.0f} "
          f"tok/s (attnviz / sae_lens speed {t['ratio_attnviz_over_sae_lens']:.2f}x)")  # fmt: skip
    record["dfa"] = []
    for n in (256, 1024, 2048):
        for method in ("attnviz", "dense"):
            if method == "dense" and n > 1024:
                gb = n * n * 576 * 4 / 1e9
                record["dfa"].append({"n": n, "method": method, "skipped": f"needs {gb:.1f} GB"})
                print(f"DFA n={n} dense: skipped, the [dest, src, 576] tensor alone is {gb:.1f} GB")
                continue
            out = subprocess.run([sys.executable, __file__, "--dfa-case", str(n), method],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            record["dfa"].append(row)
            print(
                f"DFA n={n} {method}: {row['seconds']:.2f} s, peak RSS +{row['peak_rss_growth_mb']:.0f} MB"
            )
    record["load_average_after"] = os.getloadavg()
    print(
        f"load average before {record['load_average_before']}, after {record['load_average_after']}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
