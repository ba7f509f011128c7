"""The pattern widgets against the model's own forward pass, side by side in one run (layer 3 of
the embedded SmolLM2-135M, and layer 15 for the layer switch):

1. A new prompt, at 256, 1024 and 2048 tokens: the kernel's time for ``widget.prompt = text``
   until its picture is sent (``widget.timings["painted_s"]``; the explorers' masked pair map
   follows in the same call, ``complete_s``) against the bare forward pass to the layer
   (``model.attention(tokens, layer, ["pattern"])``), alternating the two `--reps` times (median
   of each, and their ratio). Goals: 1.25x (AttentionView) and 1.5x (PatternExplorer,
   PairExplorer). The browser's decode and draw come on top (widget_render.py measures them:
   tens of milliseconds).
2. Switching layer on a 2048-token prompt shown at layer 15: the kernel's time for
   ``widget.layer = L`` for layers below it, which the one forward pass already computed.
   Goal: 300 ms.

The load average is recorded beside each figure.

    .venv/bin/python benchmarks/widget_render_forward.py [--reps 3] [--sizes 256 1024 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import attnviz
from attnviz.widgets.attention_view import AttentionView
from attnviz.widgets.pair_explorer import PairExplorer
from attnviz.widgets.pattern_explorer import PatternExplorer

RESULTS = Path(__file__).parent / "results" / "widget_render_forward.json"
LAYER, HIGH_LAYER = 3, 15
GOALS = {"AttentionView": 1.25, "PatternExplorer": 1.5, "PairExplorer": 1.5}
GOAL_LAYER_SWITCH_S = 0.3
CLASSES = {"AttentionView": AttentionView, "PatternExplorer": PatternExplorer,
           "PairExplorer": PairExplorer}  # fmt: skip


def timed(work: Any) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def new_prompt_row(model: Any, name: str, texts: list[str], n: int, reps: int) -> dict:
    """Alternate a bare forward pass and a new prompt in the widget, `reps` times each."""
    widget = CLASSES[name](model, "warm up", layer=LAYER)
    bare, kernel, complete, loads = [], [], [], []
    for i in range(reps):
        text = texts[i % len(texts)]
        ids = model.to_tokens(text)
        bare.append(timed(lambda ids=ids: model.attention(ids, LAYER, ["pattern"])))
        total = timed(lambda text=text: setattr(widget, "prompt", text))
        kernel.append(widget.timings["painted_s"])
        complete.append(total)
        assert widget.error == "" and len(widget.tokens) == ids.shape[1], (name, n, widget.error)
        loads.append(os.getloadavg()[0])
    row = {"widget": name, "n_tokens": n, "layer": LAYER, "bare_forward_s": statistics.median(bare),
           "kernel_s": statistics.median(kernel), "complete_s": statistics.median(complete),
           "load_average": statistics.median(loads)}  # fmt: skip
    row["ratio"] = row["kernel_s"] / row["bare_forward_s"]
    row["goal"] = GOALS[name]
    row["pass"] = row["ratio"] <= GOALS[name]
    print(f"  {name:<16} {n:>5} tokens: bare {row['bare_forward_s']:.2f} s, widget "
          f"{row['kernel_s']:.2f} s ({row['ratio']:.2f}x, goal {GOALS[name]}x; all of it "
          f"{row['complete_s']:.2f} s; load "
          f"{row['load_average']:.1f})", flush=True)  # fmt: skip
    return row


def layer_switch_rows(model: Any, text: str, n: int) -> list[dict]:
    widget = AttentionView(model, text, layer=HIGH_LAYER)
    rows = []
    for layer in (LAYER, 8, HIGH_LAYER - 1, 0):
        s = timed(lambda layer=layer: setattr(widget, "layer", layer))
        rows.append({"n_tokens": n, "from_layer": HIGH_LAYER, "to_layer": layer, "kernel_s": s,
                     "load_average": os.getloadavg()[0], "pass": s <= GOAL_LAYER_SWITCH_S})  # fmt: skip
        print(f"  AttentionView {n} tokens: layer {HIGH_LAYER} -> {layer} in {1000 * s:.0f} ms "
              f"(goal {1000 * GOAL_LAYER_SWITCH_S:.0f} ms)", flush=True)  # fmt: skip
    return rows


def run(model: Any, texts: dict[int, list[str]], reps: int) -> dict:
    """texts: {n: prompts of exactly n tokens (BOS included)}."""
    print("new prompt against the bare forward pass to the layer (kernel side)")
    rows = [new_prompt_row(model, name, texts[n], n, reps) for n in texts for name in CLASSES]
    print("layer switch on the same prompt")
    switch = layer_switch_rows(model, texts[max(texts)][0], max(texts))
    return {"new_prompt_vs_forward": rows, "layer_switch": switch,
            "goals": {"ratio": GOALS, "layer_switch_s": GOAL_LAYER_SWITCH_S},
            "pass": {"new_prompt_vs_forward": all(r["pass"] for r in rows),
                     "layer_switch": all(r["pass"] for r in switch)}}  # fmt: skip


def main() -> None:
    from widget_render import Prompts

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = attnviz.load_model()
    prompts = Prompts(model, n_contexts=160)  # 3 x (256 + 1024 + 2048) tokens and more
    texts = {n: [prompts.take(n)[0] for _ in range(args.reps)] for n in args.sizes}
    record = {"model": model.spec.name, "threads": torch.get_num_threads(),
              "load_average_start": os.getloadavg(), **run(model, texts, args.reps),
              "load_average_end": os.getloadavg()}  # fmt: skip
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
