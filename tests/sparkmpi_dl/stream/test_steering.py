"""Each batch's iterations: a fixed relaxation, or the tuning agent's choices (agents.steer)."""
from __future__ import annotations

from recon_env.engine import Reconstructor
from recon_env.simulate import SimulationConfig, simulate

from sparkmpi_dl.stream.rank import iterate

SIM = SimulationConfig(n_frames=24, frame_size=32, probe_diameter=10.0, photons=1e6, seed=2)


def test_batch_iterations_fixed_or_steered_by_the_agent():
    data = simulate(SIM)
    fixed = Reconstructor(data)
    done = iterate(fixed, {"algorithm": "raar", "beta": 0.8}, 4)
    assert len(done["errors"]) == 4 and done["schedule"] is None
    assert fixed.history["algorithm"] == ["raar"] * 4 and fixed.history["beta"] == [0.8] * 4

    steered = Reconstructor(data)
    done = iterate(steered, {"agent": "pretrained", "agent_every": 2}, 6)
    assert [entry["iterations"] for entry in done["schedule"]] == [2, 2, 2]
    assert len(done["errors"]) == 6 and done["model_error"] > 0
    # the agent's choices are what ran
    assert steered.history["algorithm"] == [e["algorithm"] for e in done["schedule"] for _ in (0, 1)]
