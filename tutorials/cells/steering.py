"""Cells of tutorial 07 steering: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
    (
        "md",
        """# Steering: a vector, a feature, and the frontier between effect and damage

Adding a vector to the residual stream changes what a model writes. How much it changes (the
**effect**: here, the share of sampled continuations that mention a wedding) and how much it
breaks (the **damage**: the model's loss on ordinary held-out text with the vector added) both
grow with the coefficient, so one coefficient says little. The GDM interpretability team's
progress update #1 (2024) compared steering methods by sweeping the coefficient and drawing the
**Pareto frontier** of effect against damage. This notebook builds the ActAdd wedding vector
(Turner et al. 2023) on the embedded model, sweeps it, compares it with an SAE feature and with
the SAE's reconstruction, and projects the padding features out of it.""",
    ),
    (
        "code",
        """import pandas as pd
import torch

import attnviz
from attnviz.analysis.steering import WEDDING_WORDS, actadd, residual_norm
from attnviz.dictionaries.pretrained import held_out_contexts, load_pretrained
from attnviz.models.generation import generate

# SmolLM2-135M-Instruct, offline; the nnsight backend generates with the Hugging Face model's own
# KV cache (the fastest here; TransformerLens works the same, more slowly)
model = attnviz.load_model(backend="nnsight")
sae = load_pretrained(model.spec.name, "resid-sae-L16")  # resid_pre of layer 16, top-k 32
LAYER = sae.cfg.layer
held = held_out_contexts(model, 4)[:, :32]  # documents none of the shipped SAEs saw
norm = residual_norm(model, LAYER, held)
wedding = actadd(model, "I talk about weddings constantly", "I do not talk about weddings constantly",
                 LAYER)
print(f"{wedding.name}: {len(wedding.positions)} front positions, mean norm {wedding.norm:.2f}; "
      f"the residual stream's norm at layer {LAYER} is {norm:.1f}")""",
    ),
    (
        "md",
        """## Steered beside unsteered

ActAdd adds the difference of the two prompts' residual streams at the *front* positions of
the new prompt (the shorter prompt was padded with spaces). The coefficient is set here as a
share of the residual norm (`relative`): 1.0 adds a vector as long as the stream itself. On this
small model, steering only the few front positions needs strengths far above 1 before the
continuation moves (the benchmark sweeps up to 16). Each strength starts from the same seed, so
the only difference is the vector. Steering is held on every step of
the KV-cached generation where its positions say so (here only the prompt's front positions).""",
    ),
    (
        "code",
        """prompt = model.to_tokens("I went up to my friend and said")
n = prompt.shape[1]
rows = []
for relative in (0.0, 4.0, 16.0):
    coef = relative * norm / wedding.norm
    out = generate(model, prompt, 16, wedding.interventions(coef), seeds=[1])
    rows.append({"relative": relative, "continuation": model.tokenizer.decode(out[0, n:].tolist())})
pd.set_option("display.max_colwidth", 120)
pd.DataFrame(rows)""",
    ),
    (
        "md",
        """## A sweep

`sweep` runs every coefficient's rollouts as rows of one batched generation (rollout *j* of
every coefficient has seed *j*, so coefficient 0 is the unsteered twin) and counts the rollouts
that use a wedding word, as a whole word and ignoring case, with a 95% Wilson interval. `damage`
adds the vector to held-out text and reports the loss increase at the positions after the
steered ones and the KL of the next-token distribution, with bootstrap intervals over contexts.""",
    ),
    (
        "code",
        """from attnviz.analysis.steering import damage, frontier, sweep

RELATIVE = (0.0, 4.0, 16.0)
PROMPT = "I went up to my friend and said"


def run(v, name):
    cs = [r * norm / v.norm for r in RELATIVE]
    s = sweep(model, v, cs, PROMPT, WEDDING_WORDS, n_rollouts=6, n_new=12, resid_norm=norm)
    d = damage(model, v, cs, held, batch=4)
    return s.table.merge(d, on="coef").assign(method=name, relative=RELATIVE)


actadd_table = run(wedding, "ActAdd")
cols = ["method", "relative", "p_success", "p_lo", "p_hi", "loss_increase", "loss_increase_lo",
        "loss_increase_hi", "kl", "distinct_2"]
actadd_table[cols].round(3)""",
    ),
    (
        "md",
        """Read P(success) with its interval: 6 rollouts give wide ones (2 of 6 reads as 0.33
[0.10, 0.70]), so a difference between neighbouring rows is often noise; the benchmark
(`benchmarks/steering.py`) runs more. The damage column is
in nats per token; at coefficient 0 it is exactly zero.

## An SAE feature, the SAE's reconstruction, and the padding features

Three other vectors at the same positions: the residual SAE's feature whose decoder direction is
nearest the wedding vector's last row (scaled to the same norm per position); the SAE's
reconstruction of the two prompts' difference (the error term left out); and the wedding vector
with the SAE's padding-space features projected out (the features that fire on the padding
spaces, which the update found carry nothing about weddings).""",
    ),
    (
        "code",
        """from attnviz.analysis.steering import SteeringVector, padding_features, project_out

dec = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1)
last = wedding.vectors[-1] / wedding.vectors[-1].norm()
FEATURE = int((dec @ last).argmax())
scaled = dec[FEATURE].expand_as(wedding.vectors) * wedding.vectors.norm(dim=-1, keepdim=True)
feature_vector = SteeringVector(f"feature {FEATURE}", LAYER, scaled, wedding.positions)
reconstruction = actadd(model, "I talk about weddings constantly",
                        "I do not talk about weddings constantly", LAYER, sae=sae)
pad = padding_features(model, sae)
cleaned = project_out(wedding, sae.W_dec[pad], f"{len(pad)} padding features")
print(f"feature {FEATURE}: cosine {float(dec[FEATURE] @ last):.2f} with the vector's last row; "
      f"padding features {pad.tolist()}")
tables = [actadd_table, run(feature_vector, f"feature {FEATURE}"),
          run(reconstruction, "SAE reconstruction"), run(cleaned, "padding features out")]
all_points = pd.concat(tables, ignore_index=True)
all_points.pivot_table(index="relative", columns="method", values="p_success")""",
    ),
    (
        "md",
        """## The frontiers

Per method, the points no other point of that method beats on both axes (more rollouts on
topic, less loss on held-out text). A method whose frontier lies above and to the left of
another's is a Pareto improvement over it.""",
    ),
    (
        "code",
        """front = pd.concat([frontier(t) for t in tables])
front[["method", "relative", "p_success", "p_lo", "p_hi", "loss_increase", "kl"]].round(3)""",
    ),
    (
        "md",
        """## The SteeringLab

The same, live: choose a prompt pair or an SAE feature, a layer and positions; drag the
strength slider and the steered continuation is generated beside the unsteered one (same seed,
target words marked); "Sweep" runs every method (with an SAE: also its reconstruction and the
padding projection) as a request with a progress bar and draws effect against damage with each
method's frontier. Click a point for its rollouts.""",
    ),
    (
        "code",
        """from attnviz.widgets.steering import SteeringLab

lab = SteeringLab(model, sae, plus="I talk about weddings constantly",
                  minus="I do not talk about weddings constantly", prompt=PROMPT,
                  words=", ".join(WEDDING_WORDS), relative=2.0, n_new=12, rollouts=4,
                  contexts=held)
print(lab.generation["steered"]["text"])
lab""",
    ),
]
