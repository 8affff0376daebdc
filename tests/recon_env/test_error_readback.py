"""Deferred error read-back (what the GPU path does to avoid a device sync per iteration),
exercised on the NumPy backend by giving its ops a read-back interval > 1: the history must
be the same values as with a read after every iteration, and a divergence must name the
same first diverged iteration, with every iteration that ran in the history."""
import numpy as np
import pytest

from recon_env.engine import EngineConfig, Reconstructor
from recon_env.errors import ReconstructionDiverged
from recon_env.simulate import simulate


@pytest.fixture(scope="module")
def tiny():
    return simulate(n_frames=24, frame_size=32, probe_diameter=10, photons=1e6, seed=1)


def _deferred(data, every: int, **cfg) -> Reconstructor:
    rec = Reconstructor(data, EngineConfig(**cfg))
    rec.ops.check_interval = every  # what CupyOps sets (16)
    return rec


@pytest.mark.parametrize("every", [4, 16])
def test_deferred_reads_give_the_same_history(tiny, every):
    now, later = Reconstructor(tiny, EngineConfig(block_frames=5)), \
        _deferred(tiny, every, block_frames=5)  # several blocks per iteration
    for rec in (now, later):
        rec.step(7)
        rec.step(6, algorithm="raar", beta=0.8)
        out = rec.step(3, beta=0.8)  # generalised DM (gamma1 != -1)
    assert later.history == now.history  # bit-identical floats, same length
    assert len(later.history["fourier_error"]) == later.iteration == 16
    assert out["fourier_error"] == now.history["fourier_error"][-3:]
    assert np.array_equal(later.result()["object"], now.result()["object"])


def test_deferred_divergence_names_the_first_diverged_iteration(tiny):
    params = dict(beta=2.0, gamma1=10.0, gamma2=-10.0)  # explodes (test_engine)
    now, later = Reconstructor(tiny), _deferred(tiny, 8)
    with pytest.raises(ReconstructionDiverged) as first:
        now.step(60, **params)
    with pytest.raises(ReconstructionDiverged) as deferred:
        later.step(60, **params)
    assert deferred.value.iteration == first.value.iteration < 60
    assert deferred.value.reason == first.value.reason
    # the deferred run went on to the end of its read-back interval, all of it recorded
    k = first.value.iteration
    assert k % 8 and later.iteration == -(-k // 8) * 8 == now.iteration + 8 - k % 8
    assert len(later.history["fourier_error"]) == later.iteration
    assert later.history["fourier_error"][:k] == now.history["fourier_error"][:k]
