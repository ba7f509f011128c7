"""The `attnviz` command line: models, corpora, collect, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from attnviz.errors import AttnvizError
from attnviz.models.adapter import ACTIVATION_FIELDS
from attnviz.models.registry import DEFAULT_MODEL


def _models(args: argparse.Namespace) -> None:
    from attnviz.models.registry import KNOWN_MODELS

    width = max(len(n) for n in KNOWN_MODELS)
    for entry in KNOWN_MODELS.values():
        mark = "*" if entry.name == DEFAULT_MODEL else " "
        print(f"{mark} {entry.name:<{width}}  {entry.source:<8}  {entry.description}")
    print("\n* default. Also: any TransformerLens model name, or a Hugging Face id 'org/name'")
    print("  (loaded through nnsight). Models marked 'hub' need network access the first time.")


def _corpora(args: argparse.Namespace) -> None:
    from attnviz.data.corpora import list_corpora

    for row in list_corpora():
        print("  ".join(str(v) for v in row.values()))


def _add_collect_args(p: argparse.ArgumentParser, tokens: int) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name (see `attnviz models`)")
    p.add_argument("--backend", choices=["transformer_lens", "nnsight"], default=None)
    p.add_argument("--layer", type=int, default=3, help="attention layer, counted from 0")
    p.add_argument("--tokens", type=int, default=tokens, help="how many tokens to collect")
    p.add_argument("--corpus", default="pydocs", help="corpus name, text file or folder")
    p.add_argument("--n-ctx", type=int, default=128, help="tokens per context")
    p.add_argument("--batch-size", type=int, default=8, help="contexts per forward pass")
    p.add_argument(
        "--fields",
        default="resid_normed,q,k",
        help=f"comma-separated activations to keep, from {','.join(ACTIVATION_FIELDS)}",
    )
    p.add_argument("--dtype", default="float32", help="storage dtype (float32, float16, bfloat16)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace a store made differently")


def _collect(args: argparse.Namespace):
    import attnviz
    from attnviz.data.collect import collect_activations
    from attnviz.data.corpora import get_corpus

    corpus = get_corpus(args.corpus)  # a bad corpus fails before the model loads
    adapter = attnviz.load_model(args.model, backend=args.backend, device=args.device)
    out = args.out or f"activations/{adapter.spec.name}-L{args.layer}"
    store = collect_activations(
        adapter,
        corpus,
        layer=args.layer,
        n_tokens=args.tokens,
        out_dir=out,
        fields=tuple(f.strip() for f in args.fields.split(",") if f.strip()),
        n_ctx=args.n_ctx,
        batch_size=args.batch_size,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    print(f"{len(store)} tokens of layer {args.layer} in {out}")
    return adapter, store


def _demo(args: argparse.Namespace) -> None:
    from attnviz.demo import run_demo

    run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnviz", description="Look at what transformer attention does, with dictionaries."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the models attnviz knows").set_defaults(func=_models)
    sub.add_parser("corpora", help="list the text corpora").set_defaults(func=_corpora)
    collect = sub.add_parser("collect", help="collect a layer's attention activations to disk")
    _add_collect_args(collect, tokens=100_000)
    collect.add_argument("--out", default=None, help="store directory (resumed if it exists)")
    collect.set_defaults(func=_collect)
    demo = sub.add_parser("demo", help="the main job on the embedded model, end to end")
    _add_collect_args(demo, tokens=32_768)
    demo.add_argument("--out", default=None, help="store directory")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AttnvizError as err:
        print(f"attnviz: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nattnviz: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
