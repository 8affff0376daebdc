"""`sparkmpi-dl recon` and `sparkmpi-dl bench recon` end to end (small sizes)."""
import json
import os
import subprocess
import sys

import pytest

SMALL = ["--frames", "24", "--shape", "32", "--photons", "1e6"]


def _cli(*args, timeout=240):
    # recon_env.cli is the same parser `sparkmpi-dl` registers, without the other areas
    return subprocess.run([sys.executable, "-m", "recon_env.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def test_recon_simulated_writes_outputs(tmp_path):
    out = tmp_path / "out"
    sim = tmp_path / "sim.cxi"
    proc = _cli("recon", "--simulate", *SMALL, "--iterations", "12", "--report-every", "4",
                "--out", str(out), "--save-simulation", str(sim))
    assert proc.returncode == 0, proc.stderr
    assert "iteration 12/12" in proc.stdout and "s/it" in proc.stdout
    for name in ("recon.cxi", "object.png", "errors.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 12 and "phase_rms" in summary["quality"]
    # and the saved simulation reconstructs from the file, with RAAR
    proc = _cli("recon", "--cxi", str(sim), "--algorithm", "raar", "--iterations", "3",
                "--out", str(tmp_path / "out2"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["algorithm"] == "raar"


def test_recon_two_ranks(tmp_path):
    proc = _cli("recon", "--simulate", *SMALL, "--iterations", "4", "--ranks", "2",
                "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["ranks"] == 2


def test_recon_bad_cxi_names_file(tmp_path):
    bad = tmp_path / "broken.cxi"
    bad.write_bytes(b"\x00" * 64)
    proc = _cli("recon", "--cxi", str(bad), "--iterations", "2", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "broken.cxi" in proc.stderr and "HDF5" in proc.stderr


@pytest.mark.parametrize("args, match", [(["--beta", "5"], "beta"),
                                         (["--algorithm", "raar", "--beta", "1.5"], "RAAR")])
def test_recon_bad_parameters(tmp_path, args, match):
    proc = _cli("recon", "--simulate", *SMALL, *args, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and match in proc.stderr


def test_bench_json_two_ranks():
    proc = _cli("bench", "recon", "--frames", "16", "--shape", "32", "--iterations", "2",
                "--warmup", "1", "--ranks", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])  # a pure JSON line
    assert report["ranks"] == 2 and report["comm"] == "mpi"


def test_bench_json():
    proc = _cli("bench", "recon", "--frames", "16", "--shape", "32", "--iterations", "3",
                "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["iterations"] == 3 and report["frames"] == 16 and report["shape"] == 32
    assert 0 < report["seconds_per_iteration"] <= report["seconds_total"]


def test_import_is_light():
    """The env (agent side) imports recon_env: no cupy, mpi4py or tensorflow on the way, and
    recon_env never imports the agents package above it (core <- recon_env <- agents)."""
    code = ("import sys, recon_env, recon_env.engine, recon_env.simulate, recon_env.cxi, "
            "recon_env.cli, recon_env.runner, recon_env.tuning_env; recon_env.Reconstructor; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'cupy', 'mpi4py', 'tensorflow', 'agents'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _main(*args) -> int:
    from recon_env import cli

    return cli.main(list(args))


def test_summary_records_inputs_and_pictures_are_labelled(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main("recon", "--simulate", *SMALL, "--iterations", "3", "--seed", "5",
                 "--algorithm", "raar", "--beta", "0.8", "--overlap", "0.7",
                 "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    inputs = summary["inputs"]
    assert inputs["seed"] == 5 and inputs["algorithm"] == "raar" and inputs["beta"] == 0.8
    assert inputs["iterations"] == 3 and inputs["ranks"] == 1 and inputs["backend"] == "numpy"
    sim = inputs["simulation"]  # every simulation parameter, defaults resolved
    assert sim["n_frames"] == 24 and sim["frame_size"] == 32 and sim["photons"] == 1e6
    assert sim["overlap"] == 0.7 and sim["seed"] == 5 and "probe_diameter" in sim
    assert inputs["engine"]["seed"] == 5 and inputs["argv"][0] == "sparkmpi-dl"
    assert summary["pixel_size_m"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "recon" and run["config"]["seed"] == 5


def test_object_png_in_microns_with_probe_and_truth(tmp_path):
    from recon_env.engine import Reconstructor
    from recon_env.plots import save_object_png
    from recon_env.simulate import simulate

    data = simulate(n_frames=16, frame_size=32, probe_diameter=10, photons=1e6, seed=1)
    rec = Reconstructor(data)
    rec.step(2)
    result = rec.result()
    drawn = save_object_png(result["object"], result["illumination"], tmp_path / "o.png",
                            pixel_m=data.object_pixel_m, title="DM, 2 iterations",
                            probe=result["probe"], truth=data.truth_object)
    assert drawn["unit"] == "µm" and drawn["title"] == "DM, 2 iterations"
    assert [p.split(" ")[0:2] for p in drawn["panels"]] == [
        ["object", "phase"], ["object", "amplitude"], ["true", "phase"], ["probe", "(brightness"]]
    assert (tmp_path / "o.png").stat().st_size > 0


def test_out_is_not_overwritten_silently(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["recon", "--simulate", *SMALL, "--iterations", "1", "--out", str(out)]
    assert _main(*args) == 0
    first = (out / "summary.json").read_text()
    capsys.readouterr()
    assert _main(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --out {out} is not empty; pass --overwrite to replace an earlier "
                   "recon run there, or choose another --out")
    assert (out / "summary.json").read_text() == first  # untouched
    assert _main(*args, "--seed", "9", "--overwrite") == 0
    assert json.loads((out / "summary.json").read_text())["inputs"]["seed"] == 9
    (out / "notes.txt").write_text("mine")  # a file no recon run wrote: never deleted
    capsys.readouterr()
    assert _main(*args, "--overwrite") == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").exists()


def _parse(*args):
    import argparse

    from recon_env import cli

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    cli.register(commands, commands.add_parser("bench").add_subparsers(dest="bench"))
    return vars(parser.parse_args(list(args)))


def test_flags_reach_the_configs_and_unset_ones_keep_their_defaults():
    """The flags come from SimulationConfig/EngineConfig; the runner builds both from the
    options dict by field name. A flag not given is None there (the config's default then
    applies: --subpixel unset stays 'when the data have them'), one given reaches its field."""
    from recon_env.engine import EngineConfig
    from recon_env.runner import config_from
    from recon_env.simulate import SimulationConfig

    options = _parse("recon", "--simulate")
    assert (options["scan"], options["subpixel"], options["deterministic"]) == (None, None, None)
    assert (options["n_frames"], options["frame_size"], options["seed"]) == (512, 128, 0)
    assert config_from(SimulationConfig, options) == SimulationConfig()
    assert config_from(EngineConfig, options) == EngineConfig()
    options = _parse("recon", "--simulate", "--scan", "raster", "--shape", "64x64", "--seed", "3",
                     "--no-subpixel", "--gpu-atomics", "--power-bound", "0.5",
                     "--position-step", "0.2", "--mode-powers", "0.8,0.2", "--host-frames")
    sim, engine = config_from(SimulationConfig, options), config_from(EngineConfig, options)
    assert (sim.scan, sim.frame_size, sim.seed, sim.subpixel, sim.mode_powers) == (
        "raster", 64, 3, False, (0.8, 0.2))
    assert (engine.seed, engine.subpixel, engine.deterministic, engine.fourier_power_bound,
            engine.position_step_max, engine.host_frames) == (3, False, False, 0.5, 0.2, True)
    bench = _parse("bench", "recon", "--ranks", "2", "--master", "local[2]", "--block-frames", "8")
    assert (bench["ranks"], bench["spark"], bench["block_frames"], bench["iterations"]) == (
        2, True, 8, 100)
