"""Run by tests/agents/test_tuning_env.py under `sparkmpi-dl mpirun -n 2`: rank 0 drives the
PtychoTuning env whose reconstruction is split over the ranks; rank 1 serves."""
import json
import sys

import gymnasium as gym

from recon_env.tuning_env import ENV_ID, register_envs

ACTIONS = [1, 4, 3, 3, 5]
SMALL = dict(iterations_per_step=4, iteration_budget=16,
             generator={"n_frames": 32, "frame_size": 32})


def episode(env: gym.Env) -> list[float]:
    env.reset(seed=7)
    rewards = []
    for action in ACTIONS:
        _, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return rewards


if __name__ == "__main__":
    register_envs()
    env = gym.make(ENV_ID, comm="mpi", **SMALL)
    if env.unwrapped.comm.rank == 0:
        result = {"size": env.unwrapped.comm.size, "rewards": episode(env),
                  "frames": list(env.unwrapped.recon.frames)}
        env.close()
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    else:
        env.unwrapped.serve()
