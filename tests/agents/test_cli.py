"""`sparkmpi-dl agent ...`: bad input gives a clear error; a trained run evaluates."""
from pathlib import Path

import pytest

from sparkmpi_dl.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and everything printed (results on stdout, the error line on stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("env,message", [
    ("NoSuchEnv-v0", "env 'NoSuchEnv-v0'"),
    ("Pendulum-v1", "needs a Discrete action space"),
])
def test_train_rejects_unusable_envs(tmp_path: Path, capsys, env: str, message: str):
    code, out = run_cli(capsys, "agent", "train", "--env", env, "--run-dir", str(tmp_path))
    assert code == 2 and message in out


def test_train_rejects_bad_values(tmp_path: Path, capsys):
    code, out = run_cli(capsys, "agent", "train", "--env", "CartPole-v1", "--run-dir",
                        str(tmp_path), "--gamma", "2")
    assert code == 2 and "DQNConfig.gamma must be in [0, 1]" in out
    code, out = run_cli(capsys, "agent", "train", "--run-dir", str(tmp_path), "--resume")
    assert code == 2 and "checkpoint.npz does not exist" in out
    with pytest.raises(SystemExit):
        main(["agent", "train", "--env", "CartPole-v1", "--run-dir", str(tmp_path),
              "--hidden", "64,x"])
    assert "--hidden wants comma-separated widths" in capsys.readouterr().err


def test_train_then_eval_and_resume_longer(tmp_path: Path, capsys):
    common = ["--run-dir", str(tmp_path), "--eval-every", "0", "--final-eval-episodes", "2"]
    code, out = run_cli(capsys, "agent", "train", "--env", "CartPole-v1", "--steps", "400",
                        "--hidden", "16", "--learning-starts", "100", "--train-freq", "50",
                        "--gradient-steps", "4", "--log-every", "200", *common)
    assert code == 0 and "step      200/400" in out and "done: 400 env steps" in out
    assert (tmp_path / "learning_curve.png").is_file() and (tmp_path / "eval.json").is_file()
    code, out = run_cli(capsys, "agent", "eval", "--run-dir", str(tmp_path), "--episodes", "3")
    assert code == 0 and "CartPole-v1: 3 greedy episodes, return" in out
    # issue 9: a new run into the used folder is refused; nothing of the old run changes
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    code, out = run_cli(capsys, "agent", "train", "--env", "CartPole-v1", "--steps", "300",
                        "--hidden", "16", *common)
    assert code == 2 and f"{tmp_path} already holds a run (dqn); a new run would mix with it: " \
        "pass --resume to continue it, or choose another folder" in out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    code, out = run_cli(capsys, "agent", "train", "--resume", "--steps", "600", *common)
    assert code == 0 and "resumed from" in out and "done: 600 env steps" in out
    code, out = run_cli(capsys, "agent", "train", "--resume", "--gamma", "0.5", *common)
    assert code == 2 and "only --steps may change" in out
    code, out = run_cli(capsys, "agent", "eval", "--run-dir", str(tmp_path / "nope"))
    assert code == 2 and "no config.json" in out
    code, out = run_cli(capsys, "agent", "compare", "--run-dir", str(tmp_path))
    assert code == 2 and "trained on 'CartPole-v1'; steering plays 'recon_env/PtychoTuning-v0'" \
        in out


def test_distributed_training_keeps_ranks_identical(tmp_path: Path, capsys):
    code, out = run_cli(capsys, "agent", "train", "--env", "CartPole-v1", "--run-dir",
                        str(tmp_path), "--ranks", "2", "--steps", "400", "--hidden", "16",
                        "--learning-starts", "100", "--train-freq", "50", "--gradient-steps",
                        "4", "--eval-every", "0", "--final-eval-episodes", "1")
    assert code == 0, out
    sums = [line.rsplit(" ", 1)[1] for line in out.splitlines() if "weights checksum" in line]
    assert len(sums) == 2 and sums[0] == sums[1]  # averaged gradients: one network
    assert (tmp_path / "rank1" / "checkpoint.npz").is_file()
    code, out = run_cli(capsys, "agent", "train", "--env", "CartPole-v1", "--run-dir",
                        str(tmp_path), "--ranks", "2", "--steps", "400")
    assert code == 2 and "already holds a run (dqn-distributed)" in out
    code, out = run_cli(capsys, "agent", "train", "--run-dir", str(tmp_path), "--ranks", "2",
                        "--resume")
    assert code == 2 and "not supported" in out
