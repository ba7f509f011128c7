"""Run by tests/test_training_loop.py under torchrun: train a QK transcoder on a store with the
loop's multi-process path and write the history and weights the test compares.

usage: torchrun --standalone --nproc-per-node N train_distributed.py STORE ROTARY CONFIG OUT"""

from __future__ import annotations

import json
import sys

import torch

from attnviz.data.store import ActivationStore
from attnviz.models.rotary import Rotary
from attnviz.training import distributed
from attnviz.training.config import QKTrainConfig
from attnviz.training.qk import QKTrainer


def main(store_dir: str, rotary_file: str, config_json: str, out: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    assert distributed.init_from_env("cpu"), "run me under torchrun with more than one process"
    tables = torch.load(rotary_file, weights_only=True)
    rotary = Rotary(tables["cos"], tables["sin"], bool(tables["adjacent_pairs"]))
    cfg = QKTrainConfig.from_dict(json.loads(config_json))
    trainer = QKTrainer(ActivationStore.open(store_dir), rotary, cfg, out, device="cpu")
    trainer.run(progress=False)
    if distributed.is_main():
        torch.save(trainer.dictionary.state_dict(), f"{out}/final.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
