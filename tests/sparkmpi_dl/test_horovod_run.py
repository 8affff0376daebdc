"""sparkmpi_dl.horovod.run: argument checks and blaming the rank that actually failed."""
from __future__ import annotations

import pytest

import sparkmpi_dl
from sparkmpi_dl.horovod import run


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="controller must be one of"):
        run(print, 2, controller="nccl")
    with pytest.raises(ValueError, match="num_proc must be >= 1"):
        run(print, 0)


def test_the_rank_that_raised_first_is_blamed_not_a_bystander():
    def rank_fn():
        import atexit
        import os
        import time

        if os.environ["SPARKMPI_RANK"] == "1":
            atexit.register(time.sleep, 5)  # slow teardown, like Horovod's shutdown
            raise RuntimeError("root cause on rank 1")
        time.sleep(1)  # a bystander that fails a moment later, as Horovod makes it do
        raise RuntimeError("Horovod has been shut down")

    with pytest.raises(sparkmpi_dl.JobFailed) as failed:
        run(rank_fn, 2, local=True)
    assert "root cause on rank 1" in str(failed.value)
