"""Fault injection for the DDP test: rank 1 alone sees a non-finite loss at step 5 (a check step), then `reid-augment train` runs.

Run under torchrun: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_fault.py train ...
"""

import os
import sys

import torch

import reid_augment.train as train_mod
from reid_augment.cli import main

if int(os.environ.get("RANK", 0)) == 1:
    calls = {"n": 0}
    real_l1 = train_mod.l1

    def faulty_l1(a, b):
        calls["n"] += 1
        loss = real_l1(a, b)
        return loss * torch.tensor(float("nan")) if calls["n"] == 5 else loss

    train_mod.l1 = faulty_l1

sys.argv[0] = "reid-augment"
main()
