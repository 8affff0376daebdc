"""Ring replay buffer: overwrite order, sampling, checkpoint round trip, clear errors."""
import numpy as np
import pytest

from agents.replay import ReplayBuffer


def fill(buf: ReplayBuffer, n: int) -> None:
    for i in range(n):
        buf.add(np.full(2, i, np.float32), i % 3, float(i), np.full(2, i + 1, np.float32),
                terminated=(i % 5 == 4))


def test_ring_overwrites_oldest_first():
    buf = ReplayBuffer(4, (2,))
    fill(buf, 6)  # items 0..5; 0 and 1 overwritten by 4 and 5
    assert len(buf) == 4 and buf.pos == 2
    assert sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert buf.obs[0].tolist() == [4.0, 4.0] and buf.next_obs[1].tolist() == [6.0, 6.0]
    assert buf.terminated[0] == 1.0 and buf.terminated[1] == 0.0


def test_sample_shape_and_only_filled_slots():
    buf = ReplayBuffer(100, (2,))
    fill(buf, 7)
    batch = buf.sample(np.random.default_rng(0), (3, 50))
    assert batch["obs"].shape == (3, 50, 2) and batch["actions"].shape == (3, 50)
    assert batch["rewards"].max() <= 6.0  # never an empty slot
    # a transition's fields stay together
    np.testing.assert_array_equal(batch["obs"][..., 0], batch["rewards"])
    np.testing.assert_array_equal(batch["next_obs"][..., 0], batch["rewards"] + 1)


def test_state_round_trip_continues_identically():
    a = ReplayBuffer(8, (2,))
    fill(a, 11)
    b = ReplayBuffer(8, (2,))
    b.load_state_dict(a.state_dict())
    fill(a, 3)
    fill(b, 3)
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.pos, a.size) == (b.pos, b.size)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="capacity must be > 0"):
        ReplayBuffer(0, (2,))
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, (2,)).sample(np.random.default_rng(0), 4)
    small = ReplayBuffer(3, (2,))
    fill(small, 2)
    with pytest.raises(ValueError, match="capacity 3 != buffer capacity 5"):
        ReplayBuffer(5, (2,)).load_state_dict(small.state_dict())
    with pytest.raises(ValueError, match="observation shape"):
        ReplayBuffer(3, (4,)).load_state_dict(small.state_dict())
