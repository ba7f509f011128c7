"""The `attnviz` command line: models, corpora, corpus, dictionaries, collect, train, demo.

Each command's options come from a config dataclass (one flag per field, help from its
docstring), so the Python API and the command line say the same thing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from attnviz.config_args import add_config_args, config_from_args
from attnviz.data.store import ActivationStore
from attnviz.errors import AttnvizError, ModelUnavailableError
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


def _embedded_tokenizer() -> Any:
    """The embedded SmolLM2's tokenizer, without loading the model (converted once if need be)."""
    from transformers import AutoTokenizer

    from attnviz.models.embedded import converted_dir, load_hf_smollm2

    if not (converted_dir() / "tokenizer.json").is_file():
        load_hf_smollm2()
    return AutoTokenizer.from_pretrained(str(converted_dir()))


def _corpus_build(args: argparse.Namespace) -> None:
    """`attnviz corpus build`: the debian-docs cache, then its token counts (once each)."""
    from attnviz.data import debian_docs, doc_build

    root = debian_docs.ensure_built(force=args.force)
    if args.tokens and doc_build.read_manifest(root)["splits"]["train"]["tokens"] is None:
        print("counting tokens with the embedded model's tokenizer", file=sys.stderr)
        doc_build.count_tokens(root, _embedded_tokenizer(), f"{DEFAULT_MODEL} (embedded)")
    print(debian_docs.report(root))


def _corpus_info(args: argparse.Namespace) -> None:
    """`attnviz corpus info [name]`: documents, characters, tokens; for debian-docs also its
    splits and sources, from the manifest."""
    from attnviz.data import debian_docs
    from attnviz.data.corpora import DOCS_CORPUS, HFStreamCorpus, get_corpus

    if args.name.split(":")[0] == DOCS_CORPUS:
        if not debian_docs.is_built():
            raise ModelUnavailableError(f"{DOCS_CORPUS} is not built: {debian_docs.install_hint()}")
        print(debian_docs.report(debian_docs.corpus_dir()))
        return
    corpus = get_corpus(args.name)
    if isinstance(corpus, HFStreamCorpus):
        raise ModelUnavailableError(
            f"{corpus.name} is streamed and has no size to report: give pydocs, debian-docs or a path"
        )
    docs = list(corpus.documents())
    print(f"{corpus.name}: {len(docs):,} documents, {sum(map(len, docs)):,} characters", end="")
    if args.tokens:
        ids = _embedded_tokenizer()(docs, add_special_tokens=False, verbose=False)["input_ids"]
        print(f", {sum(map(len, ids)):,} tokens", end="")
    print(f"; fingerprint {corpus.fingerprint[:16]}")


def _collect(args: argparse.Namespace):
    import attnviz
    from attnviz.data.collect import CollectConfig, collect_with_config
    from attnviz.data.corpora import get_corpus

    cfg = config_from_args(CollectConfig, args)
    corpus = get_corpus(cfg.corpus)  # a bad corpus fails before the model loads
    adapter = attnviz.load_model(cfg.model, backend=cfg.backend, device=cfg.device)
    out = cfg.out or f"activations/{adapter.spec.name}-L{cfg.layer}"
    store = collect_with_config(adapter, corpus, cfg, out)
    print(f"{len(store)} tokens of layer {cfg.layer} in {out}")
    return adapter, store


def _train(args: argparse.Namespace, kind: str) -> None:
    """`attnviz train qk|sae`: collect the layer's activations (resumable), then train."""
    import attnviz
    from attnviz.data.collect import collect_activations
    from attnviz.data.corpora import get_corpus
    from attnviz.training import distributed
    from attnviz.training.config import QKTrainConfig, SAETrainConfig, TrainJobConfig

    job = config_from_args(TrainJobConfig, args)
    cfg: Any = config_from_args(QKTrainConfig if kind == "qk" else SAETrainConfig, args)
    distributed.init_from_env(job.device)  # under torchrun: one process of several
    corpus = get_corpus(job.corpus)
    adapter = attnviz.load_model(job.model, backend=job.backend, device=job.device)
    name = adapter.spec.name
    fields = ("resid_normed", "q", "k") if kind == "qk" else ("z", "v")
    store_dir = job.store or f"activations/{name}-L{job.layer}" + ("" if kind == "qk" else "-zv")
    if distributed.is_main():  # one process collects; the others wait and read
        collect_activations(
            adapter, corpus, layer=job.layer, n_tokens=job.collect_tokens, out_dir=store_dir,
            fields=fields, n_ctx=job.n_ctx, batch_size=job.batch_size,
        )  # fmt: skip
    distributed.barrier()
    store = ActivationStore.open(store_dir, expect_model=name, expect_layer=job.layer)
    out = job.out or f"dictionaries/{name}-L{job.layer}-{cfg.architecture}"
    if kind == "qk":
        from attnviz.training.qk import QKTrainer

        trainer: Any = QKTrainer(store, adapter.rotary(job.layer, job.n_ctx), cfg, out, job.device)
    else:
        from attnviz.training.sae import SAETrainer

        trainer = SAETrainer(store, cfg, out, job.device)
    trainer.run()
    if not distributed.is_main():
        return
    last = [h for h in trainer.state.history if "eval_loss" in h]
    numbers = {k: v for k, v in (last[-1] if last else {}).items() if isinstance(v, int | float)}
    summary = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items())
    print(f"{cfg.architecture} for {name} layer {job.layer} -> {out}/dictionary ({summary})")


def _dictionaries(args: argparse.Namespace) -> None:
    from attnviz.dictionaries.pretrained import list_pretrained
    from attnviz.dictionaries.registry import architectures

    rows = list_pretrained(args.model)
    columns = ["model", "name", "architecture", "site", "layer", "features", "pairs", "dtype"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns))
    if not rows:
        print(f"(no shipped dictionaries{' for ' + args.model if args.model else ''})")
    print(
        "\narchitectures: " + "; ".join(f"{a.name} ({a.summary})" for a in architectures().values())
    )
    print("load one: attnviz.dictionaries.pretrained.load_pretrained(model, name)")


def _demo(args: argparse.Namespace) -> None:
    from attnviz.demo import DemoConfig, run_demo

    run_demo(config_from_args(DemoConfig, args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnviz", description="Look at what transformer attention does, with dictionaries."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the models attnviz knows").set_defaults(func=_models)
    sub.add_parser("corpora", help="list the text corpora").set_defaults(func=_corpora)
    corpus = sub.add_parser("corpus", help="build or describe a corpus (debian-docs)")
    actions = corpus.add_subparsers(dest="action", required=True)
    info = actions.add_parser("info", help="documents, characters, tokens, sources and splits")
    info.add_argument("name", nargs="?", default="debian-docs", help="a corpus name or path")
    info.add_argument(
        "--tokens", action="store_true", help="count tokens too (debian-docs: built in)"
    )
    info.set_defaults(func=_corpus_info)
    build = actions.add_parser(
        "build", help="build the debian-docs cache from the installed packages"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if it is built")
    build.add_argument("--tokens", action=argparse.BooleanOptionalAction, default=True,
                       help="count tokens with the embedded model's tokenizer (once)")  # fmt: skip
    build.set_defaults(func=_corpus_build)
    from attnviz.data.collect import CollectConfig
    from attnviz.demo import DemoConfig
    from attnviz.training.config import QKTrainConfig, SAETrainConfig, TrainJobConfig

    collect = sub.add_parser("collect", help="collect a layer's attention activations to disk")
    add_config_args(collect, CollectConfig)
    collect.set_defaults(func=_collect)
    listing = sub.add_parser("dictionaries", help="list the shipped dictionaries of every kind")
    listing.add_argument("--model", default=None, help="only those for this model")
    listing.set_defaults(func=_dictionaries)
    train = sub.add_parser("train", help="train a dictionary")
    kinds = train.add_subparsers(dest="kind", required=True)
    qk = kinds.add_parser("qk", help="QK transcoders (pattern KL) or the L2 q/k SAE baseline")
    add_config_args(qk, TrainJobConfig)
    add_config_args(qk, QKTrainConfig)
    qk.set_defaults(func=lambda a: _train(a, "qk"))
    sae = kinds.add_parser(
        "sae", help="sparse autoencoders on hook_z or the values (SAELens format)"
    )
    add_config_args(sae, TrainJobConfig)
    add_config_args(sae, SAETrainConfig)
    sae.set_defaults(func=lambda a: _train(a, "sae"))
    demo = sub.add_parser("demo", help="the main job on the embedded model, end to end")
    add_config_args(demo, DemoConfig)
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
