"""Gymnasium environment: steer the relaxation of a ptychographic reconstruction.

One episode is one reconstruction of one scan from a fresh start. Each step runs
``iterations_per_step`` (K) engine iterations with the algorithm and relaxation beta the
action selects; the episode is truncated when the iteration budget is used up.

Actions (``Discrete(6)``): ``algorithm = ("dm", "raar")[a // 3]`` and the beta index on the
ladder ``betas`` moves by ``(a % 3) - 1`` (down / keep / up), clamped at the ends:

    0: DM, beta down    1: DM, keep beta    2: DM, beta up
    3: RAAR, beta down  4: RAAR, keep beta  5: RAAR, beta up

DM uses Elser's gamma1 = -1/beta, gamma2 = 1/beta (plain DM at beta = 1).
A continuous variant, ``recon_env/PtychoTuningContinuous-v0``, takes ``Box(2)`` actions
(beta anywhere in the ladder's range, and the algorithm); see PtychoTuningContinuousEnv.

Observation (``Box(11,)`` float32, measured quantities only, no ground truth), with M_t the
engine's ``model_error`` after step t (the relative Fourier error of the current estimate
|FFT(P O_j)| against the data: measurable in a real experiment, and comparable across
algorithms, unlike the per-iteration ``fourier_error`` of the wave fed to the modulus
projection, which can rise while the image improves) and L = log10:
    0  L M_t                         1  L M_t - L M_{t-1}        2  L M_{t-1} - L M_{t-2}
    3  L e_last - L e_prev (per-iteration fourier_error slope, last iteration)
    4  L M_t - min_s L M_s           5  L exit-wave change (last iteration)
    6  beta in use                   7  1 if DM else 0           8  1 if RAAR else 0
    9  fraction of budget used       10 1 once the first chunk ran
M_0 is measured at reset (``step(0)``), so entry 0 is informative from the start. Every
entry is clipped to [-10, 10].

Reward, chosen by the env option ``reward`` (both telescope: the return is the decades of
error removed over the episode, and the start error does not depend on the actions):
- ``"model_error"`` (default): r_t = L M_{t-1} - L M_t, decades of *measured* model error
  removed by the step. Needs no truth, but can be met by fitting noise.
- ``"true_error"``: r_t = L E_{t-1} - L E_t with E the true phase RMS (rad) of the current
  object after registration (global phase, phase ramp, subpixel shift removed, in the
  well-illuminated region), exactly as ``recon_env.metrics.compare_objects`` computes it.
  Only for simulated scans with ground truth (training); the observation stays measured.
  ``info["true_phase_rms"]`` carries E at reset and after every step.
Optional reward term without ground truth (``estimator=PATH`` to a model from
``sparkmpi-dl dataset train-estimator``, or any ``PhaseErrorEstimator`` object): at truncation the last reward gains
``estimator_weight * (log10 E_0 - log10 E_T)``, where E is the estimator's prediction of the
true phase RMS from the current image and the measured error curve; ``info`` carries
``estimated_phase_rms`` at reset and at truncation, beside the ``truth_*`` metrics.
Divergence (the engine's ``ReconstructionDiverged``, or a non-finite model error) terminates
the episode with reward ``-divergence_penalty``; it never propagates.

Rendering: ``render_mode="rgb_array"`` makes ``render()`` return the current object phase as
an H x W x 3 uint8 image; ``"human"`` is refused (compute nodes have no display).
Registration: ``import recon_env`` registers both env IDs (see recon_env/README.md).

MPI (``comm="mpi"``, ranks launched by ``sparkmpi-dl mpirun`` or Spark tasks): every rank
builds the env; rank 0 is driven through the Gymnasium API and broadcasts each reset (the
scan drawn) and step (the action); ranks > 0 call ``env.unwrapped.serve()``, which repeats
them on their share of the frames until rank 0 calls ``close()``.

``reset(seed=...)`` draws a scan from ``ScanGenerator`` (object, probe, scan pattern,
photon count, overlap, probe defocus, position errors, noise seed; presets "toy", "train",
"heldout") with the env's seeded RNG: the same seed gives the same
scan and, the engine being deterministic, the same episode. ``info`` holds the measured
errors of the step and, at the end of an episode of a simulated scan, ground-truth metrics
(``truth_phase_nrmse`` ...) for evaluation only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np

from recon_env.observation import (ALGORITHMS, BETAS, CLIP, N_ACTIONS, OBS_SIZE, MeasuredTrack,
                                   discrete_action)
from recon_env.observation import log10 as _log10
from sparkmpi_dl import plugins

if TYPE_CHECKING:
    from recon_env.comm import Communicator
    from recon_env.engine import Reconstructor

StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]

ENV_ID = "recon_env/PtychoTuning-v0"
CONTINUOUS_ENV_ID = "recon_env/PtychoTuningContinuous-v0"
REWARDS = ("model_error", "true_error")
RENDER_MODES = ("rgb_array",)
__all__ = ["ALGORITHMS", "BETAS", "CLIP", "CONTINUOUS_ENV_ID", "ENV_ID", "OBS_SIZE", "REWARDS",
           "PtychoTuningContinuousEnv", "PtychoTuningEnv", "ScanGenerator", "register_envs",
           "simulate_scan"]


class PhaseErrorEstimator(Protocol):
    """What the ``estimator`` reward term needs: a prediction of the true phase RMS (rad) of a
    running reconstruction from its measured data only. The env owns this interface; the
    implementation comes from above (recon_datasets.estimator.QualityEstimator, declared as
    an entry point of the group ``recon_env.estimators``), so recon_env never imports it."""

    history: int  # length of the fourier_error history the estimator reads

    def from_reconstructor(self, rec: Any, fourier_error: list[float], max_iterations: int) -> float:
        ...


@dataclass
class ScanGenerator:
    """The distribution reset() draws scans from; the one scan draw of the project
    (``recon_datasets.config.draw_scan`` uses it too).

    The defaults are the small toy scans (48 frames of 32x32: an episode takes seconds);
    ``ScanGenerator.preset("train")`` (96 frames of 64x64) and ``preset("heldout")`` (512
    frames of 128x128) have the realistic spread: 1e4-1e8 photons per frame, overlap
    0.5-0.85, focused, Gaussian and strongly defocused probes (curved, quadratic phase),
    four object types and scan-position errors.

    Draw order is fixed (object, probe, scan, probe diameter, overlap, photons, phase, seed,
    then the optional defocus and position error): a generator without the optional parts
    draws exactly what it drew before they existed, so stored datasets still validate.
    """

    objects: tuple[str, ...] = ("mixed", "cells", "rings")
    probes: tuple[str, ...] = ("airy", "gaussian")  # and "defocused": an Airy probe far
    # out of focus (defocus drawn from ``strong_defocus``)
    scans: tuple[str, ...] = ("fermat", "raster", "concentric")
    n_frames: int = 48
    frame_size: int = 32
    probe_diameter_frac: tuple[float, float] = (0.3, 0.45)  # of frame_size
    overlap: tuple[float, float] = (0.6, 0.8)
    log10_photons: tuple[float, float] = (5.0, 8.0)  # per frame, log-uniform
    phase_max: tuple[float, float] = (0.5, 1.5)
    defocus: tuple[float, float] | None = None  # rad of quadratic probe phase at the edge;
    # None: the simulator's default (3 rad), not drawn
    strong_defocus: tuple[float, float] = (8.0, 16.0)  # rad, probe "defocused"
    position_error: tuple[float, float] = (0.0, 0.0)  # px, std of the errors in the
    # positions the engine is given (drawn per scan; whole pixels unless ``subpixel``)
    subpixel: bool = False  # sub-pixel true positions and errors (slower engine)

    PRESETS = {
        "toy": {},
        "train": {"objects": ("mixed", "cells", "rings", "siemens"),
                  "probes": ("airy", "gaussian", "defocused"), "n_frames": 96,
                  "frame_size": 64, "overlap": (0.5, 0.85), "log10_photons": (4.0, 8.0),
                  "phase_max": (0.3, 1.5), "defocus": (0.0, 4.0),
                  "position_error": (0.0, 1.0)},
    }
    PRESETS["heldout"] = {**PRESETS["train"], "n_frames": 512, "frame_size": 128}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ScanGenerator":
        """A named distribution ("toy", "train", "heldout") with fields overridden."""
        if name not in cls.PRESETS:
            raise ValueError(f"ScanGenerator: unknown preset {name!r}; one of "
                             f"{sorted(cls.PRESETS)}")
        values: dict[str, Any] = {**cls.PRESETS[name], **overrides}
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)

    @classmethod
    def from_spec(cls, spec: "ScanGenerator | dict | str | None") -> "ScanGenerator":
        """A generator from the env option: an instance, a preset name, or a dict of fields
        (with an optional ``"preset"`` key the fields override)."""
        if isinstance(spec, cls):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, str):
            return cls.preset(spec)
        if isinstance(spec, dict):
            fields = dict(spec)
            name = fields.pop("preset", "toy")
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(fields) - known)
            if unknown:
                raise ValueError(f"ScanGenerator: unknown field(s) {unknown}; known: "
                                 f"{sorted(known)}")
            return cls.preset(name, **fields)
        raise ValueError(f"ScanGenerator: generator must be a preset name, a dict or a "
                         f"ScanGenerator, got {type(spec).__name__}")

    def check(self) -> None:
        for name in ("objects", "probes", "scans"):
            if not getattr(self, name):
                raise ValueError(f"ScanGenerator.{name} must not be empty")
        bad = [p for p in self.probes if p not in PROBE_KINDS]
        if bad:
            raise ValueError(f"ScanGenerator.probes: unknown probe(s) {bad}; one of {PROBE_KINDS}")
        for name in ("probe_diameter_frac", "overlap", "log10_photons", "phase_max",
                     "defocus", "strong_defocus", "position_error"):
            bounds = getattr(self, name)
            if bounds is None:
                continue
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                lo, hi = (tuple(bounds) + (None, None))[:2]
                raise ValueError(f"ScanGenerator.{name}: low {lo} > high {hi}")
        if self.position_error[0] < 0:
            raise ValueError(f"ScanGenerator.position_error must be >= 0 px, got "
                             f"{self.position_error}")
        if self.n_frames < 1:
            raise ValueError(f"ScanGenerator.n_frames must be >= 1, got {self.n_frames}")

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """Parameters of one scan: ``recon_env.simulate.SimulationConfig`` fields, plus
        ``position_error`` (px) when the generator has position errors (see
        ``simulate_scan``)."""

        def uniform(bounds: tuple[float, float]) -> float:
            return float(rng.uniform(*bounds))

        obj = str(rng.choice(list(self.objects)))
        probe = str(rng.choice(list(self.probes)))
        scan = {
            "n_frames": self.n_frames, "frame_size": self.frame_size,
            "object": obj, "probe": probe,
            "scan": str(rng.choice(list(self.scans))),
            "probe_diameter": uniform(self.probe_diameter_frac) * self.frame_size,
            "overlap": uniform(self.overlap),
            "photons": 10.0 ** uniform(self.log10_photons),
            "phase_max": uniform(self.phase_max),
            "seed": int(rng.integers(2**31 - 1)),
        }
        # order above is fixed (see the class docstring); optional parts after it
        if probe == "defocused":
            scan.update(probe="airy", probe_defocus=uniform(self.strong_defocus))
        elif self.defocus is not None:
            scan["probe_defocus"] = uniform(self.defocus)
        if self.position_error[1] > 0:
            scan["position_error"] = uniform(self.position_error)
        if self.subpixel:
            scan["subpixel"] = True
        return scan


PROBE_KINDS = ("airy", "gaussian", "defocused")


def simulate_scan(scan: dict[str, Any]) -> Any:
    """Simulate a drawn scan (``ScanGenerator.draw``): the data are made at the true
    positions, the engine is handed positions with errors of ``position_error`` px std
    (whole pixels unless the scan is sub-pixel), drawn from the scan's seed, kept inside
    the object. ``meta["true_positions"]`` keeps the truth."""
    from recon_env.simulate import simulate

    params = dict(scan)
    sigma = float(params.pop("position_error", 0.0))
    data = simulate(**params)
    if sigma > 0:
        true = np.asarray(data.positions, np.float64)
        rng = np.random.default_rng([int(params["seed"]), 7])
        error = rng.normal(0.0, sigma, true.shape)
        if not params.get("subpixel", False):
            error = np.round(error)
        n = data.intensities.shape[-1]
        limit = np.asarray(data.object_shape, np.float64) - n
        data.meta["true_positions"] = true.copy()
        data.positions = np.clip(true + error, 0.0, limit)
    return data


class PtychoTuningEnv(gym.Env[np.ndarray, int]):
    """See the module docstring for actions, observation, reward and termination."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(self, iterations_per_step: int = 5, iteration_budget: int = 60,
                 betas: tuple[float, ...] = BETAS,
                 initial_beta: float = 1.0, initial_algorithm: str = "dm",
                 divergence_penalty: float = 2.0, generator: ScanGenerator | dict | str | None = None,
                 engine: dict[str, Any] | None = None, backend: str = "numpy",
                 truth_metrics: bool = True, comm: str = "serial",
                 estimator: str | PhaseErrorEstimator | None = None, estimator_weight: float = 1.0,
                 reward: str = "model_error", render_mode: str | None = None) -> None:
        if iterations_per_step < 1:
            raise ValueError(f"PtychoTuningEnv: iterations_per_step must be >= 1, "
                             f"got {iterations_per_step}")
        if iteration_budget < iterations_per_step:
            raise ValueError(f"PtychoTuningEnv: iteration_budget ({iteration_budget}) must be "
                             f">= iterations_per_step ({iterations_per_step})")
        betas = tuple(float(b) for b in betas)
        if not betas or list(betas) != sorted(betas) or not all(0 < b <= 1 for b in betas):
            raise ValueError(f"PtychoTuningEnv: betas must be an increasing ladder in (0, 1], "
                             f"got {betas}")
        if initial_beta not in betas:
            raise ValueError(f"PtychoTuningEnv: initial_beta {initial_beta} is not on the "
                             f"ladder {betas}")
        if initial_algorithm not in ALGORITHMS:
            raise ValueError(f"PtychoTuningEnv: initial_algorithm must be one of {ALGORITHMS}, "
                             f"got {initial_algorithm!r}")
        if divergence_penalty < 0:
            raise ValueError(f"PtychoTuningEnv: divergence_penalty must be >= 0, "
                             f"got {divergence_penalty}")
        self.generator = ScanGenerator.from_spec(generator)
        self.generator.check()
        self.k = int(iterations_per_step)
        self.budget = int(iteration_budget)
        self.betas = betas
        self.initial_beta_index = betas.index(initial_beta)
        self.initial_algorithm = initial_algorithm
        self.divergence_penalty = float(divergence_penalty)
        self.engine_kwargs = dict(engine or {})
        self.backend = backend
        self.truth_metrics = truth_metrics
        if estimator_weight < 0:
            raise ValueError(f"PtychoTuningEnv: estimator_weight must be >= 0, got {estimator_weight}")
        if isinstance(estimator, (str, Path)) and not Path(estimator).exists():
            raise ValueError(f"PtychoTuningEnv: estimator model {estimator!r} does not exist "
                             "(train one with `sparkmpi-dl dataset train-estimator`)")
        # a model path is loaded on first use (TensorFlow takes seconds to import)
        self.estimator_path = str(estimator) if isinstance(estimator, (str, Path)) else None
        self.estimator_weight = float(estimator_weight)
        self._estimator: PhaseErrorEstimator | None = None
        if estimator is not None and not isinstance(estimator, (str, Path)):
            self._estimator = estimator
        self._estimator_on = estimator is not None
        self._estimate_start: float | None = None
        if reward not in REWARDS:
            raise ValueError(f"PtychoTuningEnv: reward must be one of {REWARDS}, got {reward!r}")
        self.reward_kind = reward
        self._true_errors: list[float] = []  # L E_0, L E_1, ... (reward="true_error")
        if render_mode == "human":
            raise ValueError("PtychoTuningEnv: render_mode 'human' is not supported (no window "
                             "on compute nodes); use render_mode='rgb_array' and save or show "
                             "the returned image")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"PtychoTuningEnv: render_mode must be None or one of "
                             f"{RENDER_MODES}, got {render_mode!r}")
        self.render_mode = render_mode
        if comm not in ("serial", "mpi"):
            raise ValueError(f"PtychoTuningEnv: comm must be 'serial' or 'mpi', got {comm!r}")
        self.comm: Communicator | None = None
        if comm == "mpi":  # frames split over MPI ranks; see serve()
            from recon_env.comm import MPIComm

            self.comm = MPIComm()
        # Discrete samples np.int64, an int to step(); the continuous variant puts a Box here
        self.action_space = gym.spaces.Discrete(N_ACTIONS)  # type: ignore[assignment]
        self.observation_space = gym.spaces.Box(-CLIP, CLIP, (OBS_SIZE,), np.float32)
        self.recon: Reconstructor | None = None
        self.scan: dict[str, Any] = {}
        self._track = MeasuredTrack()
        self.beta_index = self.initial_beta_index
        self.beta = self.betas[self.beta_index]
        self.algorithm = initial_algorithm

    # ---- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a scan (deterministic for a seed) and start its reconstruction afresh."""
        super().reset(seed=seed)
        scan = self.generator.draw(self.np_random)
        self._broadcast("reset", scan)
        return self._start(scan)

    def _start(self, scan: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        from recon_env.engine import EngineConfig, Reconstructor

        self.scan = scan
        data = simulate_scan(self.scan)
        self.recon = recon = Reconstructor(data, EngineConfig(**self.engine_kwargs),
                                           backend=self.backend, comm=self.comm)
        self._track = MeasuredTrack()
        self.beta_index = self.initial_beta_index
        self.beta = self.betas[self.beta_index]
        self.algorithm = self.initial_algorithm
        start = recon.step(0)["model_error"]  # M_0: the start guess
        self._track.start(start)
        info = {"scan": dict(self.scan), "model_error": float(start)}
        if self.reward_kind == "true_error":
            if data.truth_object is None:
                raise ValueError("PtychoTuningEnv: reward='true_error' needs a simulated scan "
                                 "with ground truth")
            self._true_errors = [_log10(self._true_phase_rms())]
            info["true_phase_rms"] = 10.0 ** self._true_errors[0]
        if self._estimator_on:
            self._estimate_start = self._estimated_phase_rms()
            info["estimated_phase_rms"] = self._estimate_start
        return self._observation(), info

    def _true_phase_rms(self) -> float:
        """True phase RMS (rad) after registration, as recon_env.metrics computes it."""
        return float(self._running().quality()["phase_rms"])

    def _estimated_phase_rms(self) -> float:
        """The quality estimator's prediction of the true phase RMS (rad), measured data only."""
        if self._estimator is None:
            self._estimator = plugins.load(plugins.ESTIMATORS)(self.estimator_path)
        recon = self._running()
        return self._estimator.from_reconstructor(recon, recon.history["fourier_error"],
                                                  self._estimator.history)

    def _running(self) -> Reconstructor:
        """The reconstruction reset() started."""
        if self.recon is None:
            raise RuntimeError("PtychoTuningEnv: call reset() first")
        return self.recon

    def step(self, action: int) -> StepResult:
        if self.recon is None:
            raise RuntimeError("PtychoTuningEnv.step called before reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"PtychoTuningEnv.step: action {action!r} is not in {self.action_space}")
        action = self._plain(action)
        self._broadcast("step", action)
        return self._advance(action)

    # ---- action semantics (the continuous variant overrides these two) ---------------------
    def _plain(self, action: Any) -> Any:
        """The action as plain Python data (it is broadcast to MPI ranks)."""
        return int(action)

    def _apply(self, action: Any) -> None:
        """Set ``algorithm`` and ``beta`` from an action."""
        self.algorithm, self.beta_index = discrete_action(action, self.beta_index, len(self.betas))
        self.beta = self.betas[self.beta_index]

    def _advance(self, action: Any) -> StepResult:
        from recon_env.errors import ReconstructionDiverged

        self._apply(action)
        beta = self.beta
        n = min(self.k, self.budget - self._track.iterations)
        recon = self._running()
        info: dict[str, Any] = {"algorithm": self.algorithm, "beta": beta, "diverged": False}
        try:
            out = recon.step(n, beta=beta, algorithm=self.algorithm)
            if not math.isfinite(out["model_error"]):
                raise ReconstructionDiverged(recon.iteration, "non-finite model error")
        except ReconstructionDiverged as err:
            self._track.iterations = recon.iteration
            info.update(diverged=True, divergence=str(err), iteration=recon.iteration,
                        fourier_errors=[])
            return self._observation(), -self.divergence_penalty, True, False, info
        errors = [float(e) for e in out["fourier_error"]]
        reward = self._track.record(errors, float(out["exit_change"][-1]),
                                    float(out["model_error"]))
        if self.reward_kind == "true_error":
            self._true_errors.append(_log10(self._true_phase_rms()))
            reward = self._true_errors[-2] - self._true_errors[-1]
            info["true_phase_rms"] = 10.0 ** self._true_errors[-1]
        truncated = self._track.iterations >= self.budget
        info.update(fourier_errors=errors, model_error=float(out["model_error"]),
                    iteration=self._track.iterations)
        if truncated and self._estimator_on:
            # estimator reward term: decades of predicted true phase error removed this episode
            estimate = self._estimated_phase_rms()
            start = estimate if self._estimate_start is None else self._estimate_start  # set by reset()
            reward += self.estimator_weight * (_log10(start) - _log10(estimate))
            info["estimated_phase_rms"] = estimate
        if truncated and self.truth_metrics and recon.data.truth_object is not None:
            info.update({f"truth_{k}": v for k, v in recon.quality().items()
                         if isinstance(v, float)})
        return self._observation(), reward, False, truncated, info

    # ---- MPI: rank 0 hosts the env, the other ranks follow -------------------------------
    def _broadcast(self, command: str, argument: Any) -> None:
        if self.comm is not None and self.comm.size > 1:
            self.comm.bcast((command, argument), root=0)

    def serve(self) -> None:
        """On ranks > 0: repeat rank 0's reset/step calls (their share of the frames) until
        rank 0 closes the env. Rank 0 drives the env through the normal Gymnasium API."""
        if self.comm is None or self.comm.rank == 0:
            raise RuntimeError("PtychoTuningEnv.serve() is for MPI ranks > 0 (comm='mpi')")
        while True:
            command, argument = self.comm.bcast(None, root=0)
            if command == "close":
                return
            if command == "reset":
                self._start(argument)
            else:
                self._advance(argument)

    def close(self) -> None:
        if self.comm is not None and self.comm.rank == 0:
            self._broadcast("close", None)
        super().close()

    # ---- measured features and pictures -------------------------------------------------
    def _observation(self) -> np.ndarray:
        return self._track.observation(self.beta, self.algorithm, self.budget)

    def render(self) -> np.ndarray | None:
        """render_mode 'rgb_array': the current object phase as an H x W x 3 uint8 image
        (viridis, global phase removed, limits from the illuminated area); None otherwise."""
        if self.render_mode is None:
            gym.logger.warn("PtychoTuningEnv.render() called without a render_mode; "
                            "make the env with render_mode='rgb_array'")
            return None
        if self.recon is None:
            raise RuntimeError("PtychoTuningEnv.render called before reset()")
        from recon_env.plots import phase_rgb

        result = self.recon.result()
        return phase_rgb(result["object"], result["illumination"])

    def config(self) -> dict[str, Any]:
        """The settings of this env as plain data (for reports)."""
        return {"iterations_per_step": self.k, "iteration_budget": self.budget,
                "betas": list(self.betas), "generator": asdict(self.generator),
                "engine": self.engine_kwargs, "backend": self.backend,
                "reward": self.reward_kind}


class PtychoTuningContinuousEnv(PtychoTuningEnv):
    """Continuous variant (``recon_env/PtychoTuningContinuous-v0``): ``Box(2)`` in [0, 1]^2,
    beta = betas[0] + a[0] * (betas[-1] - betas[0]) (the ladder's range), RAAR if a[1] >= 0.5
    else DM. Everything else is as in the discrete env."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)  # type: ignore[assignment]

    def _plain(self, action: Any) -> Any:
        return [float(a) for a in np.asarray(action, np.float64)]

    def _apply(self, action: Any) -> None:
        lo, hi = self.betas[0], self.betas[-1]
        self.beta = lo + action[0] * (hi - lo)
        self.algorithm = ALGORITHMS[int(action[1] >= 0.5)]


def register_envs() -> None:
    """Register ``recon_env/PtychoTuning-v0`` (and the continuous variant) with Gymnasium
    (idempotent; ``import recon_env`` already does it)."""
    from recon_env import register_envs as register

    register()


register_envs()
