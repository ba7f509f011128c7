"""Steering on the embedded model (GDM progress update #1, 2024; ActAdd, Turner et al. 2023).

1. The anger and wedding experiments at the shipped residual SAE's layer: for each method, a sweep
   of coefficients (relative to the residual norm) with P(success) over rollouts (whole target
   words, Wilson intervals) and the damage on held-out text (loss increase, next-token KL,
   bootstrap intervals over contexts), the Pareto frontier per method, a plot.
   Methods: ActAdd at the prompt's front positions; the SAE reconstruction of the same pair (its
   error term left out); the ActAdd vector with the SAE's padding-space features projected out;
   the SAE feature whose decoder direction is nearest the ActAdd vector's last row, added at the
   same positions.
2. Speed, side by side: a sweep of 16 coefficients x 16 rollouts x 32 new tokens as one batched
   generation against the same sweep as a loop of one generation per coefficient (same seeds,
   same tokens).

    .venv/bin/python benchmarks/steering.py [--rollouts 8] [--new 32] [--contexts 8]
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
)
from attnviz.dictionaries.pretrained import held_out_contexts, load_pretrained

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


def methods(model, sae, plus: str, minus: str) -> dict[str, SteeringVector]:
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
    }


def speed(
    model, v: SteeringVector, prompt: str, n_rollouts: int, n_new: int, coefs: list[float]
) -> dict:
    """The batched sweep (every coefficient and rollout as rows of one generation) against the
    loop of one generation per coefficient (its rollouts batched), same seeds."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    batched = rollouts(model, v, coefs, prompt, n_rollouts, n_new, seed=0)
    out["batched_s"] = time.perf_counter() - start
    start = time.perf_counter()
    single = rollouts(model, v, coefs, prompt, n_rollouts, n_new, seed=0, batched=False)
    out["loop_s"] = time.perf_counter() - start
    out["speedup"] = out["loop_s"] / out["batched_s"]
    out["same_tokens"] = bool(torch.equal(batched, single))
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
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                        choices=list(EXPERIMENTS))  # fmt: skip
    parser.add_argument("--backend", default="nnsight", help="the embedded model's backend "
                        "(nnsight: the Hugging Face model's own KV cache, the fastest here)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = attnviz.load_model(backend=args.backend)
    sae = load_pretrained(model.spec.name, "resid-sae-L16")
    layer = sae.cfg.layer
    held = held_out_contexts(model, args.contexts)[:, : args.context_tokens]
    norm = residual_norm(model, layer, held[:4])
    record: dict = {"model": model.spec.name, "backend": model.backend, "layer": layer, "residual_norm": norm,
                    "load_average_start": os.getloadavg(), "relative": RELATIVE}  # fmt: skip
    anger = actadd(model, "Anger", "Calm", layer)
    coefs = [r * norm / anger.norm for r in np.linspace(0, 4, 16)]
    record["speed"] = speed(model, anger, "I think you're", 16, 32, coefs)
    s = record["speed"]
    print(f"sweep {s['shape']}: batched {s['batched_s']:.1f} s, loop of one generation per coefficient "
          f"{s['loop_s']:.1f} s ({s['speedup']:.1f}x), same tokens: {s['same_tokens']}")  # fmt: skip
    for name in [] if args.speed_only else args.experiments:
        e = EXPERIMENTS[name]
        frames = []
        for method, v in methods(model, sae, e["plus"], e["minus"]).items():
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
