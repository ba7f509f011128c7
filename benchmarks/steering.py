"""Steering on the embedded model (GDM progress update #1, 2024; ActAdd, Turner et al. 2023).

1. The anger and wedding experiments at the shipped residual SAE's layer: for each method, a sweep
   of coefficients (relative to the residual norm) with P(success) over rollouts (whole target
   words, Wilson intervals) and the damage on held-out text (loss increase, next-token KL,
   bootstrap intervals over contexts), the Pareto frontier per method, a plot.
   Methods: ActAdd at the prompt's front positions; the SAE reconstruction of the same pair (its
   error term left out); the ActAdd vector with the SAE's padding-space features projected out;
   the SAE feature whose decoder direction is nearest the ActAdd vector's last row, added at the
   same positions; the shipped z SAE's feature whose W_O image is nearest that row, added at
   hook_z of every head and of its two top-loading heads only.
2. Speed, side by side: a sweep of 16 coefficients x 16 rollouts x 32 new tokens as one batched
   generation, against the same sweep as a loop of one generation per coefficient, and as a loop
   of single generations (one call per rollout; same seeds, same tokens).

    .venv/bin/python benchmarks/steering.py [--rollouts 8] [--new 32] [--contexts 8] [--singles 256]
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
from figures import save_plot

import attnviz
from attnviz.analysis.steering import (
    WEDDING_WORDS,
    SteeringVector,
    actadd,
    damage,
    frontier,
    padding_features,
    project_out,
    residual_norm,
    rollouts,
    sweep,
    z_direction,
)
from attnviz.dictionaries.pretrained import held_out_contexts, load_pretrained
from attnviz.models.generation import generate

RESULTS = Path(__file__).parent / "results"
ANGER_WORDS = ("anger", "angry", "angrily", "furious", "fury", "rage", "enraged", "mad", "hate",
               "hatred", "annoyed", "irritated", "frustrated", "outraged", "livid")  # fmt: skip
EXPERIMENTS = {
    "anger": {"plus": "Anger", "minus": "Calm", "prompt": "I think you're", "words": ANGER_WORDS},
    "wedding": {"plus": "I talk about weddings constantly",
                "minus": "I do not talk about weddings constantly",
                "prompt": "I went up to my friend and said", "words": WEDDING_WORDS},
}  # fmt: skip
RELATIVE = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0)
"""Coefficients as ||c v|| / ||resid||: the same grid for every method and layer."""


def z_feature(model, zsae, v: SteeringVector, heads: int | None) -> SteeringVector:
    """The z SAE's feature whose W_O image (every head) is nearest v's last row, at v's positions
    with v's norm per position; at hook_z of every head or of its `heads` top-loading heads."""
    s = model.spec
    W_O = model.output_weights(zsae.cfg.layer).float().cpu()
    dec = zsae.W_dec.detach().float().cpu().reshape(-1, s.n_heads, s.d_head)
    images = torch.nn.functional.normalize(torch.einsum("fhd,hdm->fm", dec, W_O), dim=-1)
    feature = int((images @ (v.vectors[-1] / v.vectors[-1].norm())).argmax())
    z = z_direction(model, zsae, feature, heads)
    scale = v.vectors.norm(dim=-1, keepdim=True)
    return SteeringVector(f"{z.name} at ActAdd's positions", z.layer, z.vectors * scale,
                          v.positions, site="z", written=z.written * scale)  # fmt: skip


def methods(model, sae, zsae, plus: str, minus: str) -> dict[str, SteeringVector]:
    layer = sae.cfg.layer
    v = actadd(model, plus, minus, layer)
    pad = padding_features(model, sae)
    last = v.vectors[-1] / v.vectors[-1].norm()
    dec = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1)
    feature = int((dec @ last).argmax())
    rows = dec[feature].expand_as(v.vectors) * v.vectors.norm(dim=-1, keepdim=True)
    return {
        "ActAdd": v,
        "SAE reconstruction": actadd(model, plus, minus, layer, sae=sae),
        "ActAdd, padding features out": project_out(
            v, sae.W_dec[pad], f"{len(pad)} padding features"
        ),
        f"SAE feature {feature}": SteeringVector(
            f"feature {feature} at ActAdd's positions", layer, rows, v.positions
        ),
        "z-SAE feature, all heads": z_feature(model, zsae, v, None),
        "z-SAE feature, top 2 heads": z_feature(model, zsae, v, 2),
    }


def speed(model, v: SteeringVector, prompt: str, n_rollouts: int, n_new: int,
          coefs: list[float], singles: int) -> dict:  # fmt: skip
    """The batched sweep (every coefficient and rollout as rows of one generation) against the
    loop of one generation per coefficient (its rollouts batched) and the loop of single
    generations (the first `singles` rollouts, one call each), same seeds."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    batched = rollouts(model, v, coefs, prompt, n_rollouts, n_new, seed=0)
    out["batched_s"] = time.perf_counter() - start
    start = time.perf_counter()
    single = rollouts(model, v, coefs, prompt, n_rollouts, n_new, seed=0, batched=False)
    out["loop_s"] = time.perf_counter() - start
    out["speedup"] = out["loop_s"] / out["batched_s"]
    out["same_tokens"] = bool(torch.equal(batched, single))
    tokens = model.to_tokens(prompt)
    n, same, start = 0, True, time.perf_counter()
    for i, c in enumerate(coefs):
        for j in range(n_rollouts):
            if n == singles:
                break
            ids = generate(model, tokens, n_new, v.interventions(c), seeds=[j])
            same &= bool(torch.equal(ids[0, tokens.shape[1] :].cpu(), batched[i, j]))
            n += 1
    elapsed = time.perf_counter() - start
    out["singles"] = n
    out["singles_s"] = elapsed
    out["singles_all_s"] = elapsed * len(coefs) * n_rollouts / max(n, 1)
    out["singles_measured_in_full"] = n == len(coefs) * n_rollouts
    out["speedup_vs_singles"] = out["singles_all_s"] / out["batched_s"]
    out["singles_same_tokens"] = same
    out["shape"] = f"{len(coefs)} coefficients x {n_rollouts} rollouts x {n_new} new tokens"
    return out


def plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for method, part in frame.groupby("method", sort=False):
        part = part.sort_values("loss_increase")
        fig.add_trace(go.Scatter(
            x=part.loss_increase, y=part.p_success, mode="markers+lines", name=method,
            error_y={"type": "data", "symmetric": False, "array": part.p_hi - part.p_success,
                     "arrayminus": part.p_success - part.p_lo},
            hovertext=[f"relative {r:.2f}" for r in part.relative],
        ))  # fmt: skip
    fig.update_layout(title=title, xaxis={"title": "loss increase on held-out text (nats/token)"},
                      yaxis={"title": "P(rollout uses a target word)"}, width=900, height=520)  # fmt: skip
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--new", type=int, default=32, help="new tokens per rollout")
    parser.add_argument("--contexts", type=int, default=8, help="held-out contexts for damage")
    parser.add_argument("--context-tokens", type=int, default=64, help="tokens of each context")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--singles", type=int, default=256, help="single generations to time "
                        "(all 256 by default; fewer are extrapolated, and the results say so)")  # fmt: skip
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                        choices=list(EXPERIMENTS))  # fmt: skip
    parser.add_argument("--backend", default="nnsight", help="the embedded model's backend "
                        "(nnsight: the Hugging Face model's own KV cache, the fastest here)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = attnviz.load_model(backend=args.backend)
    sae = load_pretrained(model.spec.name, "resid-sae-L16")
    zsae = load_pretrained(model.spec.name, "z-sae-L16")
    layer = sae.cfg.layer
    held = held_out_contexts(model, args.contexts)[:, : args.context_tokens]
    norm = residual_norm(model, layer, held[:4])
    record: dict = {"model": model.spec.name, "backend": model.backend, "layer": layer, "residual_norm": norm,
                    "load_average_start": os.getloadavg(), "relative": RELATIVE}  # fmt: skip
    anger = actadd(model, "Anger", "Calm", layer)
    coefs = [r * norm / anger.norm for r in np.linspace(0, 4, 16)]
    record["speed"] = speed(model, anger, "I think you're", 16, 32, coefs, args.singles)
    s = record["speed"]
    print(f"sweep {s['shape']}: batched {s['batched_s']:.1f} s, loop of one generation per coefficient "
          f"{s['loop_s']:.1f} s ({s['speedup']:.1f}x), same tokens: {s['same_tokens']}")  # fmt: skip
    how = "measured" if s["singles_measured_in_full"] else f"extrapolated from {s['singles']}"
    print(
        f"loop of single generations: {s['singles_all_s']:.1f} s ({how}; "
        f"{s['speedup_vs_singles']:.1f}x the batched sweep), same tokens: {s['singles_same_tokens']}"
    )
    for name in [] if args.speed_only else args.experiments:
        e = EXPERIMENTS[name]
        frames = []
        for method, v in methods(model, sae, zsae, e["plus"], e["minus"]).items():
            cs = [r * norm / v.norm for r in RELATIVE]
            sw = sweep(model, v, cs, e["prompt"], e["words"], n_rollouts=args.rollouts,
                       n_new=args.new, resid_norm=norm)  # fmt: skip
            d = damage(model, v, cs, held, batch=4)
            table = sw.table.merge(d, on="coef").assign(method=method)
            table["on_frontier"] = table.index.isin(frontier(table).index)
            table["example"] = [texts[0] for texts in sw.texts]
            frames.append(table)
            best = table[table.on_frontier].sort_values("p_success").iloc[-1]
            print(f"{name} / {method}: P(success) {table.p_success.iloc[0]:.2f} unsteered, "
                  f"best on the frontier {best.p_success:.2f} [{best.p_lo:.2f}, {best.p_hi:.2f}] "
                  f"at relative {best.relative:.2f}, loss +{best.loss_increase:.3f} "
                  f"[{best.loss_increase_lo:.3f}, {best.loss_increase_hi:.3f}] nats/token", flush=True)  # fmt: skip
        frame = pd.concat(frames, ignore_index=True)
        record[name] = frame.to_dict(orient="records")
        plot(frame, RESULTS / f"steering_{name}", f"{name}: effect against damage, layer {layer}")
    record["load_average_end"] = os.getloadavg()
    print("load average {:.2f} {:.2f} {:.2f}".format(*record["load_average_end"]))
    suffix = "_speed" if args.speed_only else ""
    out = RESULTS / f"steering{suffix}.json"
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
