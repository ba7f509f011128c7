"""Inference-time optimisation on the shipped SAEs (GDM progress update #1, 2024).

1. Speed, side by side on the same SAE decoder and the same held-out tokens: attnviz's batched
   matching / orthogonal matching / gradient pursuit against scikit-learn's `orthogonal_mp_gram`
   (OMP without positivity, with its Gram matrix precomputed: its fastest path) and
   `sparse_encode(algorithm="lasso_cd", positive=True)` with alpha searched so its mean L0 matches
   the target (with n_jobs None or the core count, whichever runs faster here): tokens/s and FVU
   at the same L0, alternated five times (best of five kept).
   The lasso's L0 varies by token; gradient pursuit races it in kind too, with an absolute
   residual tolerance (each token capped at twice the target) bisected on the same tokens twice:
   to the same mean L0 (`atol_for_mean_l0`), and to 0.95x the lasso's FVU there (equal FVU, with
   a margin for the tokens it was not bisected on, at whatever mean L0 that takes).
2. The Pareto: FVU (relative to the mean) against L0 = 1..64 for the encoder (one point), top-k of
   the encoder, MP and GP, and MP/GP on a random dictionary of the same shape; CE recovered against
   zero ablation (interval, absolute loss increase) for the splicable SAEs at a few L0s; and
   where ITO and the encoder agree (correlation above / below the median encoder activation,
   Jaccard of the chosen sets).

    .venv/bin/python benchmarks/ito.py [--sae z-sae-L18] [--tokens 2048] [--ce-contexts 16]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from figures import save_plot

import attnviz
from attnviz.analysis.ito.compare import agreement, ce_pareto, fvu_pareto, site_inputs
from attnviz.analysis.ito.pursuit import atol_for_mean_l0, gram, pursue
from attnviz.dictionaries.pretrained import held_out_contexts, load_pretrained

RESULTS = Path(__file__).parent / "results"
L0S = (1, 2, 4, 8, 16, 32, 64)
ROUNDS = 5
"""Each method of the race runs this often, alternated; its best time is kept (on this VM the same
code varies by 15% from run to run)."""
CALIBRATION_TOKENS = 512
"""Tokens the lasso's alpha and gradient pursuit's atol are bisected on (untimed)."""


def fvu_of(x: np.ndarray, recon: np.ndarray) -> float:
    return float(((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def lasso_alpha(D: np.ndarray, G: np.ndarray, y: np.ndarray, target: float) -> tuple[float, float]:
    """The alpha at which sparse_encode's positive lasso has mean L0 `target` on a subset,
    bisected in log scale (untimed: a calibration, not part of the encoding), and the lasso's FVU
    there. Above the largest correlation every code is zero, which bounds the search."""
    from sklearn.decomposition import sparse_encode

    sub = y[:CALIBRATION_TOKENS]
    hi = float((sub @ D.T).max())
    lo = hi * 1e-5
    for _ in range(16):
        mid = float(np.sqrt(lo * hi))
        code = sparse_encode(sub, D, gram=G, algorithm="lasso_cd", alpha=mid, positive=True)
        if (code != 0).sum(1).mean() > target:
            lo = mid
        else:
            hi = mid
    alpha = float(np.sqrt(lo * hi))
    code = sparse_encode(sub, D, gram=G, algorithm="lasso_cd", alpha=alpha, positive=True)
    return alpha, fvu_of(sub, code @ D)


def atol_for_fvu(x, D, b, G, cap: int, target: float, rounds: int = 18) -> float:
    """The largest atol (log-bisected) at which positive GP capped at `cap` has FVU <= target
    on x (untimed, like the lasso's alpha)."""
    xn = x.double().numpy()
    y2 = (x - b).pow(2).sum(-1)
    lo, hi = float(y2[y2 > 0].min()) * 1e-3, float(y2.max())
    for _ in range(rounds):  # invariant: FVU <= target at lo (nearly nothing left), above at hi
        mid = (lo * hi) ** 0.5
        out = pursue(x, D, cap, method="gp", bias=b, G=G, atol=mid)
        if fvu_of(xn, out.reconstruction.double().numpy()) > target:
            hi = mid
        else:
            lo = mid
    out = pursue(x, D, cap, method="gp", bias=b, G=G, atol=lo)
    reached = fvu_of(xn, out.reconstruction.double().numpy())
    if reached > target:
        raise RuntimeError(f"GP capped at {cap} atoms reaches FVU {reached:.4f}, not {target:.4f}")
    return lo


def speed(sae, x: torch.Tensor, l0: int) -> tuple[list[dict], dict]:
    """Each method ROUNDS times, alternated; best time kept. The Gram matrix is computed once per
    dictionary, outside every timing (both libraries take it as an input; it is timed apart),
    as a run over many batches of one dictionary would. scikit-learn runs in the precision
    where it is fastest here (float32 or float64, timed once each first)."""
    from sklearn.decomposition import sparse_encode
    from sklearn.linear_model import orthogonal_mp_gram

    D = sae.W_dec.detach().float()
    b = sae.b_dec.detach().float()
    xn = x.double().numpy()
    bn = b.double().numpy()
    start = time.perf_counter()
    G = gram(D)
    gram_seconds = {"attnviz (float32)": time.perf_counter() - start}
    grams = {}
    for dtype in (np.float32, np.float64):
        Dn = D.numpy().astype(dtype)
        start = time.perf_counter()
        grams[dtype] = (Dn, Dn @ Dn.T)
        gram_seconds[f"scikit-learn ({np.dtype(dtype).name})"] = time.perf_counter() - start

    def sk_omp_in(dtype):  # on 256 tokens: which precision to race in
        Dn, Gn = grams[dtype]
        y = (x[:256] - b).numpy().astype(dtype)
        return lambda: orthogonal_mp_gram(Gn, Dn @ y.T, n_nonzero_coefs=l0,
                                          norms_squared=(y**2).sum(1))  # fmt: skip

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    sk_dtype = min((np.float32, np.float64), key=lambda t: timed(sk_omp_in(t)))
    Dn, Gn = grams[sk_dtype]
    y = (x - b).numpy().astype(sk_dtype)

    runs: dict[str, dict] = {}

    def ours(method: str, positive: bool = True, atol: float = 0.0):
        cap = 2 * l0 if atol else l0

        def run():
            out = pursue(x, D, cap, method=method, positive=positive, bias=b, G=G, atol=atol)
            return lambda: (out.reconstruction.double().numpy(), out.l0.float().mean().item())

        return run

    def sk_omp():
        coef = orthogonal_mp_gram(Gn, Dn @ y.T, n_nonzero_coefs=l0, norms_squared=(y**2).sum(1))
        return lambda: (coef.T.astype(np.float64) @ Dn.astype(np.float64) + bn,
                        float((coef != 0).sum(0).mean()))  # fmt: skip

    alpha, lasso_fvu = lasso_alpha(Dn, Gn, y, l0)

    # sparse_encode runs one lasso per token, on one core unless n_jobs splits the tokens over
    # processes: race it in whichever is faster here (timed once each on the race's tokens, as
    # the processes' start-up weighs less on more of them)
    def lasso_in(jobs):
        return lambda: sparse_encode(y, Dn, gram=Gn, algorithm="lasso_cd", alpha=alpha,
                                     positive=True, n_jobs=jobs)  # fmt: skip

    lasso_jobs = min((None, os.cpu_count() or 1), key=lambda j: timed(lasso_in(j)))
    sub = x[:CALIBRATION_TOKENS]
    atols = {
        f"attnviz gp (positive, adaptive L0 <= {2 * l0})": atol_for_mean_l0(
            sub, D, l0, 2 * l0, bias=b, G=G
        ),
        f"attnviz gp (positive, adaptive L0 <= {2 * l0}, at 0.95x the lasso's FVU)": atol_for_fvu(
            sub, D, b, G, 2 * l0, 0.95 * lasso_fvu
        ),
    }

    def sk_lasso():
        coef = sparse_encode(y, Dn, gram=Gn, algorithm="lasso_cd", alpha=alpha, positive=True,
                             n_jobs=lasso_jobs)  # fmt: skip
        return lambda: (coef.astype(np.float64) @ Dn.astype(np.float64) + bn,
                        float((coef != 0).sum(1).mean()))  # fmt: skip

    sk = np.dtype(sk_dtype).name
    methods = {
        "attnviz mp (positive)": ours("mp"),
        "attnviz gp (positive)": ours("gp"),
        **{name: ours("gp", atol=atol) for name, atol in atols.items()},
        "attnviz omp (positive)": ours("omp"),
        "attnviz omp (signed, as scikit-learn's)": ours("omp", positive=False),
        f"sklearn orthogonal_mp_gram (signed, {sk})": sk_omp,
        f"sklearn sparse_encode lasso_cd (positive, {sk})": sk_lasso,
    }
    for _ in range(ROUNDS):
        for name, fn in methods.items():
            start = time.perf_counter()
            finish = fn()  # timed: the codes (attnviz's reconstruction comes with them)
            dt = time.perf_counter() - start
            recon, mean_l0 = finish()  # untimed: scikit-learn's dense reconstruction, the FVU
            best = runs.get(name)
            if best is None or dt < best["seconds"]:
                runs[name] = {"method": name, "seconds": dt, "tokens_per_s": len(xn) / dt,
                              "fvu": fvu_of(xn, recon), "l0": mean_l0}  # fmt: skip
    runs[f"sklearn sparse_encode lasso_cd (positive, {sk})"].update(alpha=alpha, n_jobs=lasso_jobs)
    for name, atol in atols.items():
        runs[name]["atol"] = atol
    return list(runs.values()), gram_seconds


def against_sklearn(rows: list[dict]) -> list[dict]:
    """For each scikit-learn run: the fastest attnviz method at equal or better FVU (within 0.1%)
    and the same mean L0 (within half an atom: the lasso's alpha is bisected on a subset, so its
    L0 on the race lands near the target, not on it), and how many times faster it is (the goal:
    50x)."""
    out = []
    ours = [r for r in rows if r["method"].startswith("attnviz")]
    for sk in (r for r in rows if r["method"].startswith("sklearn")):
        fair = [r for r in ours if r["fvu"] <= sk["fvu"] * 1.001 and r["l0"] <= sk["l0"] + 0.5]
        best = max(fair, key=lambda r: r["tokens_per_s"], default=None)
        out.append({"sklearn": sk["method"], "sklearn_fvu": sk["fvu"],
                    "attnviz": best["method"] if best else None,
                    "attnviz_fvu": best["fvu"] if best else None,
                    "times_faster": best["tokens_per_s"] / sk["tokens_per_s"] if best else None})  # fmt: skip
    return out


def plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    """FVU vs L0 per dictionary and method (PNG through kaleido when it works, else HTML)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (dictionary, method), part in frame.groupby(["dictionary", "method"]):
        dash = "dash" if dictionary.endswith(":random") else "solid"
        mode = "markers" if method == "encoder" else "lines+markers"
        fig.add_trace(go.Scatter(x=part.l0, y=part.fvu, mode=mode, name=f"{dictionary} {method}",
                                 line={"dash": dash}, marker={"size": 10 if method == "encoder" else 6}))  # fmt: skip
    fig.update_layout(title=title, xaxis={"type": "log", "title": "L0 (true mean)"},
                      yaxis={"title": "FVU", "type": "log"}, width=900, height=520)  # fmt: skip
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sae", nargs="+", default=["z-sae-L18", "resid-sae-L16", "v-sae-L18"])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens for the speed race")
    parser.add_argument("--pareto-contexts", type=int, default=32)
    parser.add_argument("--ce-contexts", type=int, default=16)
    parser.add_argument("--l0", type=int, default=16, help="L0 of the speed race")
    args = parser.parse_args()
    from sklearn.exceptions import ConvergenceWarning

    # A lasso per token: thousands of "did not converge" lines at the chosen alpha's tolerance.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    torch.set_num_threads(os.cpu_count() or 1)
    model = attnviz.load_model()
    held = held_out_contexts(model, args.pareto_contexts)
    record: dict = {"model": model.spec.name, "load_average_start": os.getloadavg(), "saes": {}}
    for name in args.sae:
        sae = load_pretrained(model.spec.name, name)
        x = site_inputs(model, sae, held).float()
        out: dict = {"tokens": int(x.shape[0])}
        race = x[
            torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[: args.tokens]
        ]
        out["race_tokens"] = int(race.shape[0])
        out["speed"], out["gram_seconds"] = speed(sae, race, args.l0)
        table = pd.DataFrame(out["speed"])
        print(f"\n{name}: speed at L0 {args.l0} on {len(race)} held-out tokens")
        with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 200):
            print(table.to_string(index=False))
            out["against_sklearn"] = against_sklearn(out["speed"])
            print(pd.DataFrame(out["against_sklearn"]).to_string(index=False))
        print(
            "Gram matrix, once per dictionary (s):",
            {k: round(v, 3) for k, v in out["gram_seconds"].items()},
        )
        start = time.perf_counter()
        pareto = fvu_pareto({name: sae}, x, l0s=L0S, methods=("topk", "mp", "gp"))
        out["pareto_seconds"] = time.perf_counter() - start
        out["pareto"] = pareto.to_dict(orient="records")
        print(
            pareto.pivot_table(index="target_l0", columns=["dictionary", "method"], values="fvu")
            .round(3)
            .to_string()
        )
        enc = pareto[pareto.method == "encoder"].iloc[0]
        print(f"encoder: L0 {enc.l0:.1f}, FVU {enc.fvu:.3f}")
        plot(
            pareto,
            RESULTS / f"ito_pareto_{name}",
            f"ITO on {name}: FVU vs L0 ({x.shape[0]} held-out tokens)",
        )
        out["agreement"] = agreement(sae, x, method="gp")
        print(
            "agreement (gp at the encoder's L0):",
            {k: round(v, 3) if isinstance(v, float) else v for k, v in out["agreement"].items()},
        )
        if sae.cfg.site in ("z", "resid_pre"):
            ce = ce_pareto(model, sae, held[: args.ce_contexts].split(8), l0s=(4, 16, 64),
                           methods=("topk", "gp"), random_baseline=True)  # fmt: skip
            out["ce"] = ce.to_dict(orient="records")
            with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
                print(ce.drop(columns=["warning"]).to_string(index=False))
            for w in ce.warning.dropna().unique():
                print("warning:", w)
        record["saes"][name] = out
    record["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {record['load_average_end']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ito.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"written to {RESULTS / 'ito.json'}")


if __name__ == "__main__":
    main()
