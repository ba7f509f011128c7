"""Time and peak memory of masked attention scores from QK-dictionary features: the sparse path
(attnviz.analysis.qk.masked_scores) against the dense reference (dense_masked_scores), as
the context grows.

Realistic sparsity by default: 1024 query and 1024 key features, 20 active per position, 1% of
the feature pairs x heads kept with random mask values; SmolLM2-like attention (9 query heads
sharing 3 kv heads, d_head 64, rotary base 100000, "half" layout). Random decoders and pairs, so
kept pairs meet as often as chance says (trained masks keep co-firing pairs: more meetings).

Each measurement runs in a fresh process. Peak memory on CPU is the rise of the resident set's
high-water mark (VmHWM, reset through /proc/self/clear_refs) over the resident set just before
the call: torch's CPU allocations are invisible to tracemalloc. On CUDA it is
torch.cuda.max_memory_allocated over what was allocated before. Both include the [heads, n, n]
output itself, reported separately. Dense sizes stop when the extrapolated peak passes
--dense-limit-gb or the extrapolated time --dense-time-limit; those rows say "skipped" with the
estimates. Dense rows also give the largest difference from the sparse scores.

    .venv/bin/python benchmarks/qk_pair_scores.py [--sparse-sizes 64 ... 2048] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

RESULTS = Path(__file__).parent / "results" / "qk_pair_scores.json"
GIB = 1024**3


# ---- one measurement (child process) ----------------------------------------------------------


def build(args: argparse.Namespace, n: int, positional: str):
    """(dictionary, features, pair table, rotary) for one context length, always the same."""
    from attnviz.dictionaries.pair_table import PairTable
    from attnviz.dictionaries.qk import QKConfig, QKDictionary
    from attnviz.models.rotary import Rotary

    device = torch.device(args.device)
    spec = SimpleNamespace(
        name="smollm2-like", d_model=576, n_heads=args.heads, n_kv_heads=args.kv_heads,
        d_head=args.d_head, positional=positional, attn_scale=args.d_head**0.5,
    )  # fmt: skip
    qk = QKDictionary(QKConfig.for_model(spec, 0, d_hidden_q=args.d), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        qk.query.b_out.normal_(0, 0.1, generator=g)
        qk.key.b_out.normal_(0, 0.1, generator=g)
    qk = qk.to(device)

    def features() -> torch.Tensor:
        chosen = torch.rand(1, n, args.d, generator=g).topk(args.l0, -1).indices
        values = 0.1 + torch.rand(1, n, args.l0, generator=g)
        return torch.zeros(1, n, args.d).scatter_(-1, chosen, values).to(device)

    f_q, f_k = features(), features()
    total = args.d * args.d * args.heads
    kept = torch.randperm(total, generator=g)[: int(args.kept * total)]
    q, rest = kept // (args.d * args.heads), kept % (args.d * args.heads)
    table = PairTable(
        q=q, k=rest // args.heads, head=rest % args.heads, value=0.1 + 0.9 * torch.rand(q.numel()),
        shape=(args.d, args.d, args.heads),
    ).to(device)  # fmt: skip
    rotary = None
    if positional == "rotary":
        theta = args.base ** (-torch.arange(0, args.d_head, 2).float() / args.d_head)
        angle = torch.arange(n).float()[:, None] * theta
        rotary = Rotary(
            cos=torch.cat([angle.cos()] * 2, -1).to(device),
            sin=torch.cat([angle.sin()] * 2, -1).to(device),
        )
    return qk, f_q, f_k, table, rotary


def _status(field: str) -> int:
    """A /proc/self/status field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(fn, device: torch.device):
    """(result, seconds, peak bytes above the state before the call)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _status("VmRSS")
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _status("VmHWM") - before
    return out, seconds, peak


def one(args: argparse.Namespace) -> dict:
    from attnviz.analysis.qk import dense_masked_scores, masked_scores

    method, n, positional = args.one[0], int(args.one[1]), args.one[2]
    device = torch.device(args.device)
    qk, f_q, f_k, table, rotary = build(args, n, positional)
    fn = {"sparse": masked_scores, "dense": dense_masked_scores}[method]
    # Warm up on a short prefix (lazy initialisation, first-call allocations).
    fn(qk, f_q[:, :16], f_k[:, :16], table, rotary)
    scores, seconds, peak = measure(lambda: fn(qk, f_q, f_k, table, rotary), device)
    row = dict(
        method=method, positional=positional, n=n, status="ok", seconds=seconds,
        peak_bytes=peak, output_bytes=scores.numel() * scores.element_size(),
    )  # fmt: skip
    if method == "dense":
        sparse = masked_scores(qk, f_q, f_k, table, rotary)
        finite = torch.isfinite(scores)
        row["max_abs_diff_vs_sparse"] = (scores[finite] - sparse[finite]).abs().max().item()
        row["max_abs_score"] = scores[finite].abs().max().item()
    return row


# ---- the sweep (parent process) ---------------------------------------------------------------


def child(args: argparse.Namespace, method: str, n: int, positional: str) -> dict:
    cmd = [sys.executable, __file__, "--one", method, str(n), positional]
    for name in ("d", "l0", "kept", "heads", "kv_heads", "d_head", "base", "device"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return dict(method=method, positional=positional, n=n, status="failed",
                    error=done.stderr.strip().splitlines()[-1:])  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def literal_bytes(args: argparse.Namespace, n: int) -> int:
    """float32 bytes of the literal [n, n, d_q, d_k, heads] pair-term tensor."""
    return 4 * n * n * args.d * args.d * args.heads


def sweep(args: argparse.Namespace) -> dict:
    rows = []
    load_before = os.getloadavg()
    for positional in args.positional:
        for n in args.sparse_sizes:
            rows.append(child(args, "sparse", n, positional))
            print(f"sparse {positional} n={n}: {rows[-1].get('seconds', float('nan')):.2f} s",
                  file=sys.stderr)  # fmt: skip
    last = None
    for n in args.dense_sizes:
        if last is not None:
            # Dense work and its working memory grow about linearly in n; the output as n².
            grow = n / last["n"]
            out = 4 * args.heads * n * n
            est_bytes = int((last["peak_bytes"] - last["output_bytes"]) * grow) + out
            est_seconds = last["seconds"] * grow
            if est_bytes > args.dense_limit_gb * GIB or est_seconds > args.dense_time_limit:
                rows.append(dict(
                    method="dense", positional="rotary", n=n, status="skipped",
                    estimated_peak_bytes=est_bytes, estimated_seconds=est_seconds,
                ))  # fmt: skip
                continue
        rows.append(child(args, "dense", n, "rotary"))
        print(f"dense n={n}: {rows[-1].get('seconds', float('nan')):.2f} s", file=sys.stderr)
        if rows[-1]["status"] == "ok":
            last = rows[-1]
    for row in rows:
        row["literal_5d_bytes"] = literal_bytes(args, row["n"])
    return dict(
        benchmark="qk_pair_scores",
        device=args.device,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        config=dict(
            d_q=args.d,
            d_k=args.d,
            l0=args.l0,
            kept=args.kept,
            n_heads=args.heads,
            n_kv_heads=args.kv_heads,
            d_head=args.d_head,
            rotary_base=args.base,
            batch=1,
        ),
        rows=rows,
    )


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(b) >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def table(result: dict) -> str:
    lines = [
        f"{'method':7s} {'positions':9s} {'n':>5s} {'time':>9s} {'peak':>10s} {'output':>10s} "
        f"{'peak-out':>10s} {'5-D literal':>11s}  note",
    ]
    for r in result["rows"]:
        if r["status"] == "ok":
            note = ""
            if "max_abs_diff_vs_sparse" in r:
                note = f"max |dense - sparse| {r['max_abs_diff_vs_sparse']:.1e} (|score| <= {r['max_abs_score']:.2f})"
            lines.append(
                f"{r['method']:7s} {r['positional']:9s} {r['n']:5d} {r['seconds']:8.2f}s "
                f"{fmt_bytes(r['peak_bytes']):>10s} {fmt_bytes(r['output_bytes']):>10s} "
                f"{fmt_bytes(r['peak_bytes'] - r['output_bytes']):>10s} "
                f"{fmt_bytes(r['literal_5d_bytes']):>11s}  {note}"
            )
        elif r["status"] == "skipped":
            lines.append(
                f"{r['method']:7s} {r['positional']:9s} {r['n']:5d} {'skipped':>9s} "
                f"{'~' + fmt_bytes(r['estimated_peak_bytes']):>10s} {'-':>10s} {'-':>10s} "
                f"{fmt_bytes(r['literal_5d_bytes']):>11s}  est. {r['estimated_seconds']:.0f} s"
            )
        else:
            lines.append(f"{r['method']:7s} {r['positional']:9s} {r['n']:5d} failed: {r['error']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sparse-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048]
    )
    parser.add_argument(
        "--dense-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048]
    )
    parser.add_argument(
        "--positional",
        nargs="+",
        default=["rotary", "absolute"],
        help="position schemes for the sparse rows (dense rows are rotary)",
    )
    parser.add_argument("--dense-limit-gb", type=float, default=4.0)
    parser.add_argument("--dense-time-limit", type=float, default=120.0, help="seconds")
    parser.add_argument("--d", type=int, default=1024, help="query and key features")
    parser.add_argument("--l0", type=int, default=20, help="active features per position")
    parser.add_argument("--kept", type=float, default=0.01, help="fraction of pairs kept")
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--base", type=float, default=100000.0, help="rotary base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # METHOD N POSITIONAL (child)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    result = sweep(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\n{result['threads']} torch threads, load average {result['load_average_before']} "
          f"-> {result['load_average_after']}; written to {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
