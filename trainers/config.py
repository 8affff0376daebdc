"""Options of the image trainer, shared by the script, `sparkmpi-dl train` and the tests."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from sparkmpi_dl.flags import add_out


@dataclass
class TrainConfig:
    """Everything one training run needs; plain data so it pickles into Spark tasks."""

    out_dir: str = "runs/image_classifier"
    data: str | None = None            # Parquet directory; None with synthetic=True
    synthetic: bool = False
    synthetic_samples: int = 512       # per rank
    image_col: str = "image"
    label_col: str = "label"
    image_shape: tuple[int, int, int] = (32, 32, 1)
    num_classes: int = 4
    epochs: int = 3
    batch_size: int = 32               # per rank
    steps_per_epoch: int | None = None  # cap; default: the smallest shard's full batches
    lr: float = 0.01                   # per rank; scaled by the number of ranks
    momentum: float = 0.9
    warmup_epochs: int = 1
    seed: int = 1234
    width: int = 8
    threads: int = 1                   # TensorFlow intra-op threads per rank
    resume: bool = False               # continue the run in out_dir (sparkmpi_dl.runs rules)
    fail_at_step: int | None = None    # fault injection: raise at this global step
    fail_rank: int = 0
    verbose: bool = True

    def validate(self) -> None:
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


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image shape must look like 32,32,1, got {text!r}")
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"image shape must have 3 sizes H,W,C, got {text!r}")
    return shape  # type: ignore[return-value]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The trainer's options (one per TrainConfig field)."""
    d = TrainConfig()
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="directory of Parquet files (columns --image-col, --label-col)")
    data.add_argument("--synthetic", action="store_true", help="train on a generated toy set")
    data.add_argument("--synthetic-samples", type=int, default=d.synthetic_samples,
                      help="generated samples per rank")
    data.add_argument("--image-col", default=d.image_col, help="image column of --data")
    data.add_argument("--label-col", default=d.label_col, help="label column of --data")
    data.add_argument("--image-shape", type=_shape, default=d.image_shape, help="H,W,C")
    data.add_argument("--num-classes", type=int, default=d.num_classes, help="label classes")
    train = parser.add_argument_group("training")
    add_out(train, dest="out_dir", default=d.out_dir,
            help="checkpoints/, tensorboard/ and metrics.jsonl go here")
    train.add_argument("--epochs", type=int, default=d.epochs, help="epochs to train")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="per rank")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="cap on steps per epoch (default: the smallest shard's full batches)")
    train.add_argument("--lr", type=float, default=d.lr, help="per-rank rate, scaled by the rank count")
    train.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    train.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                       help="epochs of learning-rate warm-up")
    train.add_argument("--seed", type=int, default=d.seed, help="weights and data seed")
    train.add_argument("--width", type=int, default=d.width, help="filters of the first conv layer")
    train.add_argument("--threads", type=int, default=d.threads, help="TF intra-op threads per rank")
    train.add_argument("--resume", dest="resume", action="store_true", default=d.resume,
                       help="continue the run in the output folder from its last checkpoint "
                            "(same arguments; --epochs may grow)")
    train.add_argument("--no-resume", dest="resume", action="store_false",
                       help="start a new run (the default; the output folder must be empty)")
    train.add_argument("--fail-at-step", type=int, default=None,
                       help="fault injection (tests): raise at this global step")
    train.add_argument("--fail-rank", type=int, default=d.fail_rank,
                       help="fault injection (tests): the rank that raises")
    train.add_argument("--quiet", dest="verbose", action="store_false",
                       help="no progress bar or per-epoch lines")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Pick the TrainConfig fields out of parsed arguments and validate them."""
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                            if hasattr(args, f.name)})
    config.validate()
    return config
