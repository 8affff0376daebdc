"""Steer a reconstruction between chunks of iterations, as the tuning agent does.

    python examples/recon_schedule.py

Tries three relaxation schedules from the same snapshot and keeps the best; a schedule that
diverges is caught (ReconstructionDiverged) and the state restored.
"""
from recon_env.engine import Reconstructor
from recon_env.errors import ReconstructionDiverged
from recon_env.simulate import simulate

SCHEDULES = {
    "plain DM": [dict(algorithm="dm", beta=1.0)] * 4,
    "RAAR then DM": [dict(algorithm="raar", beta=0.8)] * 2 + [dict(algorithm="dm", beta=1.0)] * 2,
    "too aggressive": [dict(algorithm="dm", beta=1.9, gamma1=5.0, gamma2=5.0)] * 4,
}


def main() -> None:
    data = simulate(n_frames=64, frame_size=64, probe_diameter=20, photons=1e6, seed=1)
    rec = Reconstructor(data)
    rec.step(5)  # a common start
    start = rec.snapshot()
    for name, schedule in SCHEDULES.items():
        rec.restore(start)
        try:
            for params in schedule:
                hist = rec.step(10, **params)
            print(f"{name:15s} model error {hist['model_error']:.2e}  "
                  f"phase rms {rec.quality()['phase_rms']:.3f} rad")
        except ReconstructionDiverged as err:
            print(f"{name:15s} diverged: {err}")


if __name__ == "__main__":
    main()
