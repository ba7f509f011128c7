"""The dictionary registry and the one save / load for every architecture."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import pytest
import torch

from attnviz.dictionaries import Dictionary, QKDictionary, load_dictionary, save_dictionary
from attnviz.dictionaries.pretrained import list_pretrained, load_pretrained
from attnviz.dictionaries.registry import architectures, get_architecture, register
from attnviz.dictionaries.sparse_coder import SparseCoder
from attnviz.errors import (
    AttnvizError,
    CorruptFileError,
    DictionaryMismatchError,
    DictionaryNotFoundError,
    UnknownArchitectureError,
)


@dataclass
class ToyConfig:
    """A made-up architecture on hook_z, to show that nothing in io is QK-shaped."""

    model: str
    layer: int
    d_in: int
    d_hidden: int
    architecture: str = "toy_z_sae"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ToyConfig:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


class ToyDictionary(Dictionary):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.coder = SparseCoder(cfg.d_in, cfg.d_hidden, cfg.d_in, seed=0)
        self.note = torch.zeros(0)

    def site_widths(self) -> dict[str, int]:
        return {"z": self.cfg.d_in}

    def extra_tensors(self):
        return {"note": torch.arange(5)}

    def load_extra(self, tensors, raw_cfg):
        self.note = tensors["note"]


register("toy_z_sae", ToyConfig, ToyDictionary, "test only")


def test_the_builtin_architectures_are_registered():
    known = architectures()
    assert {"qk_transcoder", "qk_sae"} <= set(known)
    assert known["qk_transcoder"].module is QKDictionary
    with pytest.raises(ValueError, match="already registered"):
        register("qk_transcoder", ToyConfig, ToyDictionary)


def test_an_unknown_architecture_in_cfg_json_names_the_known_ones(tmp_path, tiny_llama_adapter):
    d = ToyDictionary(ToyConfig("tiny-llama", 1, 64, 16))
    save_dictionary(d, tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    cfg["architecture"] = "crosscoder"
    (tmp_path / "d" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownArchitectureError, match=r"'crosscoder'.*qk_sae, qk_transcoder"):
        load_dictionary(tmp_path / "d")
    with pytest.raises(UnknownArchitectureError):
        get_architecture(None)


def test_any_registered_architecture_saves_loads_and_checks_its_site(tmp_path, tiny_llama_adapter):
    spec = tiny_llama_adapter.spec  # hook_z width = n_heads * d_head = 4 * 16
    d = ToyDictionary(ToyConfig("tiny-llama", 1, spec.n_heads * spec.d_head, 16))
    with torch.no_grad():
        d.coder.W_enc.add_(1.0)
    save_dictionary(d, tmp_path / "d", dtype=torch.float16)
    loaded = load_dictionary(tmp_path / "d", model=tiny_llama_adapter, layer=1)
    assert isinstance(loaded, ToyDictionary)
    assert torch.equal(loaded.note, torch.arange(5))  # extra tensors keep their dtype
    assert torch.allclose(loaded.coder.W_enc, d.coder.W_enc, atol=1e-2)
    assert json.loads((tmp_path / "d" / "cfg.json").read_text())["weights_dtype"] == "float16"
    wrong = ToyDictionary(ToyConfig("tiny-llama", 1, 48, 16))
    save_dictionary(wrong, tmp_path / "wrong")
    with pytest.raises(DictionaryMismatchError, match="width at z 48 vs 64"):
        load_dictionary(tmp_path / "wrong", model=tiny_llama_adapter)


def test_bad_paths_and_files_raise_attnviz_errors(tmp_path):
    with pytest.raises(DictionaryNotFoundError, match="not a dictionary directory") as err:
        load_dictionary(tmp_path / "nothing")
    assert isinstance(err.value, AttnvizError) and isinstance(err.value, FileNotFoundError)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cfg.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_dictionary(tmp_path / "bad")
    with pytest.raises(DictionaryNotFoundError, match="qk-transcoder-L3"):
        load_pretrained("smollm2-135m", "no-such-dictionary")


@pytest.mark.slow
@pytest.mark.parametrize("row", list_pretrained(), ids=lambda r: r["name"])
def test_every_shipped_dictionary_loads_and_fits_its_model(row, smollm2):
    d = load_dictionary(row["path"], model=smollm2, layer=row["layer"])
    assert get_architecture(row["architecture"]).module is type(d)
    assert load_pretrained(row["model"], row["name"]).cfg == d.cfg
    assert all(p.dtype == torch.float32 for p in d.parameters())
    assert (getattr(d, "pairs", None) is not None) == row["pairs"]
