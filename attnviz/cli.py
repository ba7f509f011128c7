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


def fields_arg(args: argparse.Namespace, required: Sequence[str] = ()) -> tuple[str, ...]:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    return (*fields, *(f for f in required if f not in fields))


def collect_with_args(adapter, corpus, args: argparse.Namespace, out, fields: tuple[str, ...]):
    """collect_activations with the options `_add_collect_args` defines."""
    from attnviz.data.collect import collect_activations

    return collect_activations(
        adapter, corpus, layer=args.layer, n_tokens=args.tokens, out_dir=out, fields=fields,
        n_ctx=args.n_ctx, batch_size=args.batch_size, dtype=args.dtype, overwrite=args.overwrite,
    )  # fmt: skip


def _collect(args: argparse.Namespace):
    import attnviz
    from attnviz.data.corpora import get_corpus

    corpus = get_corpus(args.corpus)  # a bad corpus fails before the model loads
    adapter = attnviz.load_model(args.model, backend=args.backend, device=args.device)
    out = args.out or f"activations/{adapter.spec.name}-L{args.layer}"
    store = collect_with_args(adapter, corpus, args, out, fields_arg(args))
    print(f"{len(store)} tokens of layer {args.layer} in {out}")
    return adapter, store


def _add_config_args(p: argparse.ArgumentParser, config_cls: type) -> None:
    """One option per config field, help from the field's docstring: the config drives the CLI."""
    import dataclasses

    from attnviz.docstrings import field_docs

    docs = field_docs(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=docs.get(f.name))  # fmt: skip
        elif isinstance(default, tuple):
            p.add_argument(flag, type=type(default[0]), nargs=len(default), default=default,
                           help=docs.get(f.name))  # fmt: skip
        else:
            p.add_argument(flag, type=type(default), default=default, help=docs.get(f.name))


def _train_qk(args: argparse.Namespace) -> None:
    import dataclasses

    import attnviz
    from attnviz.data.collect import collect_activations
    from attnviz.data.corpora import get_corpus
    from attnviz.training.config import QKTrainConfig
    from attnviz.training.qk_trainer import QKTrainer

    cfg = QKTrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(QKTrainConfig)}
    )
    corpus = get_corpus(args.corpus)
    adapter = attnviz.load_model(args.model, backend=args.backend, device=args.device)
    name = adapter.spec.name
    store_dir = args.store or f"activations/{name}-L{args.layer}"
    store = collect_activations(
        adapter, corpus, layer=args.layer, n_tokens=args.collect_tokens, out_dir=store_dir,
        fields=("resid_normed", "q", "k"), n_ctx=args.n_ctx, batch_size=args.batch_size,
    )  # fmt: skip
    out = args.out or f"dictionaries/{name}-L{args.layer}-{cfg.architecture}"
    trainer = QKTrainer(store, adapter.rotary(args.layer, args.n_ctx), cfg, out, args.device)
    trainer.run()
    last = [h for h in trainer.state.history if "eval_loss" in h]
    numbers = {k: v for k, v in (last[-1] if last else {}).items() if isinstance(v, int | float)}
    summary = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items())
    print(f"{cfg.architecture} for {name} layer {args.layer} -> {out}/dictionary ({summary})")


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
    train = sub.add_parser("train", help="train a dictionary")
    kinds = train.add_subparsers(dest="kind", required=True)
    qk = kinds.add_parser("qk", help="QK transcoders (pattern KL) or the L2 q/k SAE baseline")
    qk.add_argument("--model", default=DEFAULT_MODEL, help="model name (see `attnviz models`)")
    qk.add_argument("--backend", choices=["transformer_lens", "nnsight"], default=None)
    qk.add_argument("--layer", type=int, required=True, help="attention layer, counted from 0")
    qk.add_argument("--corpus", default="pydocs", help="corpus name, text file or folder")
    qk.add_argument("--store", default=None, help="activation store (collected if missing)")
    qk.add_argument("--collect-tokens", type=int, default=262_144, help="tokens to collect")
    qk.add_argument("--n-ctx", type=int, default=128, help="tokens per context")
    qk.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
    qk.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    qk.add_argument("--out", default=None, help="output directory (resumed if it exists)")
    from attnviz.training.config import QKTrainConfig

    _add_config_args(qk, QKTrainConfig)
    qk.set_defaults(func=_train_qk)
    demo = sub.add_parser("demo", help="the main job on the embedded model, end to end")
    _add_collect_args(demo, tokens=32_768)
    demo.add_argument("--out", default=None, help="store directory")
    demo.add_argument("--qk-steps", type=int, default=150, help="steps of the small QK transcoder")
    demo.add_argument(
        "--eval-contexts", type=int, default=8, help="held-out contexts for the shipped ones"
    )
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
