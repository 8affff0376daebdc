"""Options of the image trainer, shared by the script, `sparkmpi-dl train` and the tests."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from sparkmpi_dl.config import Flag, add_dataclass_flags, comma_separated, from_args


@dataclass
class TrainConfig:
    """Everything one training run needs; plain data so it pickles into Spark tasks.
    Each field is a flag of `sparkmpi-dl train` (its docstring is the flag's help)."""

    out_dir: str = "runs/image_classifier"
    """checkpoints/, tensorboard/ and metrics.jsonl go here"""
    data: str | None = None
    """directory of Parquet files (columns --image-col, --label-col); none with --synthetic"""
    synthetic: bool = False
    """train on a generated toy set"""
    synthetic_samples: int = 512
    """generated samples per rank"""
    image_col: str = "image"
    """image column of --data"""
    label_col: str = "label"
    """label column of --data"""
    image_shape: tuple[int, int, int] = (32, 32, 1)
    """H,W,C of an image"""
    num_classes: int = 4
    """label classes"""
    epochs: int = 3
    """epochs to train"""
    batch_size: int = 32
    """per rank"""
    steps_per_epoch: int | None = None
    """cap on steps per epoch (default: the smallest shard's full batches)"""
    lr: float = 0.01
    """per-rank rate, scaled by the rank count"""
    momentum: float = 0.9
    """SGD momentum"""
    warmup_epochs: int = 1
    """epochs of learning-rate warm-up"""
    seed: int = 1234
    """weights and data seed"""
    width: int = 8
    """filters of the first conv layer"""
    threads: int = 1
    """TF intra-op threads per rank"""
    resume: bool = False
    """continue the run in the output folder from its last checkpoint (same arguments;
    --epochs may grow; sparkmpi_dl.runs rules); a new run needs an empty folder"""
    fail_at_step: int | None = None
    """fault injection (tests): raise at this global step"""
    fail_rank: int = 0
    """fault injection (tests): the rank that raises"""
    verbose: bool = True
    """progress bar and per-epoch lines on rank 0"""

    def check(self) -> None:
        """Reject bad combinations with a message naming the option."""
        if self.synthetic == (self.data is not None):
            raise ValueError("give exactly one of --data DIR or --synthetic")
        positive = ("synthetic_samples", "num_classes", "epochs", "batch_size", "width", "threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"--steps-per-epoch must be >= 1, got {self.steps_per_epoch}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0:
            raise ValueError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"--image-shape must be H,W,C with positive sizes, got {self.image_shape}")


# Where a flag differs from its field: the shared --out (older --out-dir), "32,32,1", --quiet.
FLAGS = {"out_dir": Flag(names=("--out",), hidden=("--out-dir",), metavar="DIR"),
         "image_shape": Flag(type=comma_separated(int, length=3, example="32,32,1"), metavar="H,W,C"),
         "verbose": Flag(names=("--quiet",), action="store_false",
                             help="no progress bar or per-epoch lines")}
DATA_FIELDS = ("data", "synthetic", "synthetic_samples", "image_col", "label_col", "image_shape",
               "num_classes")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The trainer's options: one flag per TrainConfig field, in a data and a training group."""
    add_dataclass_flags(parser.add_argument_group("data"), TrainConfig, flags=FLAGS, only=DATA_FIELDS)
    add_dataclass_flags(parser.add_argument_group("training"), TrainConfig, flags=FLAGS,
                        exclude=DATA_FIELDS)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The checked TrainConfig the parsed arguments describe (ValueError naming a bad option)."""
    config = from_args(TrainConfig, args)
    config.check()
    return config
