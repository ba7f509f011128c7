"""Head-loading clusters of the shipped value and hook_z SAEs: the cluster-size power law (slope,
its standard error and R^2) and the silhouette at the chosen k, each beside the same figure on the
shuffled null; for the two-layer value SAE, the features that load on both layers; and the time
of a k sweep (k = 2..64) with attnviz's settings against scikit-learn's defaults, side by side.

Live features (the ones clustered) fire at least once in 1e5 held-out tokens.

    .venv/bin/python benchmarks/head_loadings.py [--contexts 800] [--k 16]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import attnviz
from attnviz.analysis.clusters import kmeans_sweep
from attnviz.analysis.head_clusters import analyse_head_loadings
from attnviz.analysis.head_loadings import cross_layer_summary, head_loadings
from attnviz.analysis.metrics import FiringCounts
from attnviz.dictionaries.io import load_dictionary
from attnviz.dictionaries.pretrained import HELD_OUT_CORPUS, held_out_contexts, list_pretrained

RESULTS = Path(__file__).parent / "results" / "head_loadings.json"
SWEEP = range(2, 65)


def held_out_acts(
    model, tokens: torch.Tensor, layers: set[int]
) -> dict[tuple[str, int], torch.Tensor]:
    """z and v of each layer over the held-out contexts, BOS left out: [tokens, width]."""
    from tqdm.auto import tqdm

    out: dict[tuple[str, int], list[torch.Tensor]] = {}
    for batch in tqdm(tokens.split(16), desc="held-out z and v", unit="batch"):
        for layer in sorted(layers):
            acts = model.attention(batch, layer, ["z", "v"])
            for site in ("z", "v"):
                x = (
                    getattr(acts, site)[:, 1:]
                    .flatten(-2)
                    .reshape(-1, getattr(acts, site)[0, 0].numel())
                )
                out.setdefault((site, layer), []).append(x.float())
    return {key: torch.cat(parts) for key, parts in out.items()}


def density(sae, acts) -> torch.Tensor:
    x = torch.cat([acts[(sae.cfg.site, layer)] for layer in sae.cfg.layers], dim=-1)
    counts = FiringCounts()
    with torch.no_grad():
        for part in x.split(8192):
            counts.add(sae.encode(part))
    return counts.density()


def sweep_timing(vectors: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The k = 2..64 sweep with attnviz's settings (n_init 4) and scikit-learn's defaults
    (n_init "auto": one k-means++ start), alternated twice, with the inertias compared."""
    times: dict[str, list[float]] = {"attnviz": [], "sklearn_default": []}
    frames = {}
    for _ in range(2):
        for name, n_init in (("attnviz", 4), ("sklearn_default", "auto")):
            start = time.perf_counter()
            frames[name], _ = kmeans_sweep(vectors, SWEEP, seed=seed, n_init=n_init)
            times[name].append(time.perf_counter() - start)
    ratio = frames["sklearn_default"].inertia / frames["attnviz"].inertia
    return {
        "attnviz_s": min(times["attnviz"]), "sklearn_default_s": min(times["sklearn_default"]),
        "time_ratio": min(times["attnviz"]) / min(times["sklearn_default"]),
        "inertia_ratio_default_over_attnviz_median": float(ratio.median()),
        "inertia_ratio_default_over_attnviz_max": float(ratio.max()),
        "silhouette_attnviz_mean": float(frames["attnviz"].silhouette.mean()),
        "silhouette_default_mean": float(frames["sklearn_default"].silhouette.mean()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=800, help="held-out contexts (x 127)")
    parser.add_argument("--k", type=int, default=None, help="k (default: best silhouette)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = attnviz.load_model()
    entries = [e for e in list_pretrained(model.spec.name) if e["site"] in ("z", "v")]
    saes = {e["name"]: load_dictionary(e["path"], model=model) for e in entries}
    layers = {layer for sae in saes.values() for layer in sae.cfg.layers}
    tokens = held_out_contexts(model, args.contexts)
    start = time.perf_counter()
    acts = held_out_acts(model, tokens, layers)
    print(f"held-out activations of layers {sorted(layers)}: {time.perf_counter() - start:.0f} s")
    rows = []
    for name, sae in saes.items():
        dens = density(sae, acts)
        analysis = analyse_head_loadings(sae, dens, ks=SWEEP, k=args.k)
        row = {"name": name, "site": sae.cfg.site, "layers": sae.cfg.layers,
               "d_sae": sae.cfg.d_sae, "tokens": int(acts[(sae.cfg.site, sae.cfg.layer)].shape[0])}  # fmt: skip
        row |= analysis.summary()
        row["sizes"] = analysis.clustering.sizes.tolist()
        row["null_sizes"] = analysis.null_clustering.sizes.tolist()
        row["sweep"] = analysis.sweep.to_dict(orient="list")
        if len(sae.cfg.layers) == 2:
            alive = torch.from_numpy(np.isin(np.arange(sae.cfg.d_sae), analysis.features))
            row["cross_layer"] = cross_layer_summary(head_loadings(sae), alive=alive)
        if name.startswith("v-sae") and len(sae.cfg.layers) == 1:
            row["sweep_timing"] = sweep_timing(analysis.vectors)
        rows.append(row)
        print(f"{name}: {row['features']} live, k={row['k']}", flush=True)
    table = pd.DataFrame(rows)
    cols = ["name", "features", "k", "silhouette", "null_silhouette", "slope", "slope_stderr",
            "r2", "null_slope", "null_r2"]  # fmt: skip
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
        print(table[cols].to_string(index=False))
    for row in rows:
        if "cross_layer" in row:
            print(f"{row['name']} cross-layer: {row['cross_layer']}")
        if "sweep_timing" in row:
            t = row["sweep_timing"]
            print(
                f"{row['name']} k=2..64 sweep: attnviz (n_init 4) {t['attnviz_s']:.1f} s, "
                f"scikit-learn default {t['sklearn_default_s']:.1f} s ({t['time_ratio']:.2f}x); "
                f"default's inertia / attnviz's: median {t['inertia_ratio_default_over_attnviz_median']:.3f}, "
                f"max {t['inertia_ratio_default_over_attnviz_max']:.3f}"
            )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    record = {"model": model.spec.name, "held_out": HELD_OUT_CORPUS,
              "load_average": load, "rows": rows}  # fmt: skip
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
