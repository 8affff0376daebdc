"""CuPy kernels against the NumPy reference (skipped without cupy or a GPU: CI has none)."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")
try:
    if cp.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no CUDA device", allow_module_level=True)
except cp.cuda.runtime.CUDARuntimeError:
    pytest.skip("no CUDA device", allow_module_level=True)

from recon_env.engine import EngineConfig, Reconstructor  # noqa: E402
from recon_env.ops_cupy import CupyOps  # noqa: E402
from recon_env.ops_numpy import NumpyOps  # noqa: E402
from recon_env.simulate import simulate  # noqa: E402


def _rel(a, b):
    a, b = cp.asnumpy(a) if isinstance(a, cp.ndarray) else a, np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture()
def case():
    rng = np.random.default_rng()  # fresh inputs each run
    n, frames = 16, 7
    c64 = lambda *s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    obj, probe, psi = c64(40, 37), c64(n, n), c64(frames, n, n)
    iy = rng.integers(0, 40 - n, frames).astype(np.int32)
    ix = rng.integers(0, 37 - n, frames).astype(np.int32)
    amp = rng.random((frames, n, n)).astype(np.float32)
    mask = rng.random((n, n)) > 0.1
    amp *= mask
    return dict(obj=obj, probe=probe, psi=psi, iy=iy, ix=ix, amp=amp, mask=mask)


@pytest.mark.parametrize("deterministic", [True, False])
def test_overlap_kernels_match_numpy(case, deterministic):
    c, g, h = case, CupyOps(deterministic), NumpyOps()
    d = {k: cp.asarray(v) for k, v in c.items()}
    n, f = c["psi"].shape[-1], c["psi"].shape[0]
    out_h = np.full((f, n, n), np.nan, np.complex64)
    out_d = cp.full((f, n, n), np.nan, cp.complex64)
    assert _rel(g.gather_product(d["obj"], d["probe"], d["iy"], d["ix"], out_d),
                h.gather_product(c["obj"], c["probe"], c["iy"], c["ix"], out_h)) < 1e-6
    th, td = np.zeros_like(c["obj"]), cp.zeros_like(d["obj"])
    h.scatter_conj_probe(th, c["psi"], c["probe"], c["iy"], c["ix"], np.empty_like(c["psi"]))
    g.scatter_conj_probe(td, d["psi"], d["probe"], d["iy"], d["ix"], None)
    assert _rel(td, th) < 1e-5
    ph, pd = np.zeros(c["obj"].shape, np.float32), cp.zeros(c["obj"].shape, cp.float32)
    h.scatter_power(ph, c["probe"], c["iy"], c["ix"])
    g.scatter_power(pd, d["probe"], d["iy"], d["ix"])
    assert _rel(pd, ph) < 1e-5
    # numerator and denominator of eq. 4 in one pass (the engine's object update)
    td, pd = cp.zeros_like(d["obj"]), cp.zeros(c["obj"].shape, cp.float32)
    g.scatter_conj_probe(td, d["psi"], d["probe"], d["iy"], d["ix"], None, power=pd)
    assert _rel(td, th) < 1e-5 and _rel(pd, ph) < 1e-5
    nh, dh = np.zeros((n, n), np.complex64), np.zeros((n, n), np.float32)
    nd, dd = cp.zeros((n, n), cp.complex64), cp.zeros((n, n), cp.float32)
    h.probe_sums(c["obj"], c["psi"], c["iy"], c["ix"], nh, dh, np.empty_like(c["psi"]),
                 np.empty(c["psi"].shape, np.float32))
    g.probe_sums(d["obj"], d["psi"], d["iy"], d["ix"], nd, dd, None, None)
    assert _rel(nd, nh) < 1e-5 and _rel(dd, dh) < 1e-5


@pytest.mark.parametrize("coef", [(2, -1, 1, 1, -1, 0), (2, -1, 0.8, 0.8, -0.6, 0),
                                  (1.5, -0.5, 1, 0.7, -0.3, 0.4)])
@pytest.mark.parametrize("pbound", [None, 0.05])
def test_fourier_update_matches_numpy(case, coef, pbound):
    c, g, h = case, CupyOps(), NumpyOps()
    f, n = c["psi"].shape[0], c["psi"].shape[-1]
    maskf = c["mask"].astype(np.float32)
    notmask = (~c["mask"]).astype(np.float32)
    obj2 = c["obj"][::-1].copy() * 0.5
    psi_h = c["psi"].copy()
    buf = lambda dt: np.empty((f, n, n), dt)
    po = h.exit_waves(c["obj"], c["probe"], c["iy"], c["ix"], buf(np.complex64))
    extra = h.exit_waves(obj2, c["probe"], c["iy"], c["ix"], buf(np.complex64))
    err_h, ch_h = h.fourier_update(psi_h, po, c["amp"], maskf, notmask, coef, pbound,
                                   buf(np.complex64), buf(np.float32), buf(np.float32), extra)
    d = {k: cp.asarray(v) for k, v in c.items()}
    psi_d = d["psi"]
    po_d = g.exit_waves(d["obj"], d["probe"], d["iy"], d["ix"])
    extra_d = g.exit_waves(cp.asarray(obj2), d["probe"], d["iy"], d["ix"])
    sums = cp.zeros((n, n), cp.complex64), cp.zeros((n, n), cp.float32)
    err_d, ch_d = g.fourier_update(psi_d, po_d, d["amp"], cp.asarray(maskf),
                                   cp.asarray(notmask), coef, pbound,
                                   cp.empty((f, n, n), cp.complex64), None,
                                   cp.empty((f, n, n), cp.float32), extra_d, probe_sums=sums)
    assert _rel(psi_d, psi_h) < 1e-5
    assert isinstance(ch_d, cp.ndarray) and ch_d.ndim == 0  # read back by the engine later
    assert _rel(err_d, err_h) < 1e-4 and abs(float(ch_d) - ch_h) / ch_h < 1e-4
    # the fused eq. 5 sums are those of the updated exit waves
    nh, dh = np.zeros((n, n), np.complex64), np.zeros((n, n), np.float32)
    h.probe_sums(c["obj"], psi_h, c["iy"], c["ix"], nh, dh, buf(np.complex64), buf(np.float32))
    assert _rel(sums[0], nh) < 1e-5 and _rel(sums[1], dh) < 1e-5


def test_object_sums_on_large_tiles_match_numpy():
    """Objects of >= 1024 tiles use 32 x 32 tiles (four rows per thread): same sums."""
    rng = np.random.default_rng()
    n, views, shape = 64, 40, (1040, 1030)
    c64 = lambda *s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    psi, probes = c64(views, n, n), c64(views, n, n)
    iy = rng.integers(0, shape[0] - n + 1, views).astype(np.int32)
    ix = rng.integers(0, shape[1] - n + 1, views).astype(np.int32)
    g, h = CupyOps(), NumpyOps()
    th, td = np.zeros(shape, np.complex64), cp.zeros(shape, cp.complex64)
    h.scatter_conj_probe(th, psi, probes, iy, ix, np.empty_like(psi))
    g.scatter_conj_probe(td, cp.asarray(psi), cp.asarray(probes), cp.asarray(iy),
                         cp.asarray(ix), None)
    assert _rel(td, th) < 1e-6
    ph, pd = np.zeros(shape, np.float32), cp.zeros(shape, cp.float32)
    h.scatter_power(ph, probes, iy, ix)
    g.scatter_power(pd, cp.asarray(probes), cp.asarray(iy), cp.asarray(ix))
    assert _rel(pd, ph) < 1e-6
    td, pd = cp.zeros(shape, cp.complex64), cp.zeros(shape, cp.float32)
    g.scatter_conj_probe(td, cp.asarray(psi), cp.asarray(probes[0]), cp.asarray(iy),
                         cp.asarray(ix), None, power=pd)  # one shared probe
    th, ph = np.zeros(shape, np.complex64), np.zeros(shape, np.float32)
    h.scatter_conj_probe(th, psi, probes[0], iy, ix, np.empty_like(psi))
    h.scatter_power(ph, probes[0], iy, ix)
    assert _rel(td, th) < 1e-6 and _rel(pd, ph) < 1e-6


@pytest.mark.parametrize("algorithm, beta", [("dm", 1.0), ("raar", 0.8), ("dm", 0.8)])
def test_reconstruction_matches_numpy(algorithm, beta):
    data = simulate(n_frames=48, frame_size=32, probe_diameter=10, photons=1e6, seed=3,
                    bad_pixels=0.02)
    a = Reconstructor(data, EngineConfig(), backend="numpy")
    b = Reconstructor(data, EngineConfig(), backend="cupy")
    ha, hb = a.step(8, algorithm=algorithm, beta=beta), b.step(8, algorithm=algorithm, beta=beta)
    assert np.allclose(ha["fourier_error"], hb["fourier_error"], rtol=1e-3)
    assert _rel(b.result()["object"], a.result()["object"]) < 1e-3
    state = b.snapshot()
    first = b.step(3)
    b.restore(state)
    assert np.allclose(b.step(3)["fourier_error"], first["fourier_error"], rtol=1e-5)


def test_gpu_simulation_matches_cpu_without_noise():
    cpu = simulate(n_frames=20, frame_size=32, probe_diameter=10, photons=None, seed=1)
    gpu = simulate(n_frames=20, frame_size=32, probe_diameter=10, photons=None, seed=1, gpu=True)
    assert _rel(gpu.intensities, cpu.intensities) < 1e-4


def test_too_many_frames_message():
    from recon_env.errors import DeviceMemoryError

    free, _ = cp.cuda.runtime.memGetInfo()
    frames = int(free // (2048 * 2048 * 4))  # 4 bytes a pixel: three times what fits
    with pytest.raises(DeviceMemoryError, match="use more ranks"):
        CupyOps().plan(2048, frames, None, False)  # resident forced
    with pytest.raises(DeviceMemoryError, match="one block of work space"):
        CupyOps().plan(65536, 4, None, True)  # one 65536^2 frame: ~170 GB of work space



@pytest.mark.parametrize("block", [16, 7])
def test_streaming_from_host_matches_resident(block):
    """Frames kept in host memory and streamed through the GPU in blocks: same result.

    Object sums add every frame in frame order from the running sum, whatever the blocking;
    probe sums add groups of 16 frames in order, so blocks of a multiple of 16 frames give
    the resident result bit for bit. Other block sizes group the probe sums differently, so
    float32 rounding differs (~1e-7 of a sum): measured on an H200 after 6 iterations,
    1.2e-7 on the errors and 1.7e-6 on the object (blocks of 7 and 5), hence 1e-5."""
    data = simulate(n_frames=40, frame_size=32, probe_diameter=10, photons=1e6, seed=2)
    resident = Reconstructor(data, EngineConfig(), backend="cupy")
    streamed = Reconstructor(data, EngineConfig(host_frames=True, block_frames=block),
                             backend="cupy")
    assert streamed.streaming and not resident.streaming and streamed.block == block
    assert isinstance(streamed.psi, np.ndarray)
    ha, hb = resident.step(6, beta=0.9), streamed.step(6, beta=0.9)
    if block % 16 == 0:
        assert np.array_equal(streamed.result()["object"], resident.result()["object"])
        assert np.array_equal(streamed.result()["probe"], resident.result()["probe"])
        assert np.allclose(ha["fourier_error"], hb["fourier_error"], rtol=1e-6)
    else:
        assert np.allclose(ha["fourier_error"], hb["fourier_error"], rtol=1e-5)
        assert _rel(streamed.result()["object"], resident.result()["object"]) < 1e-5
    state = streamed.snapshot()
    first = streamed.step(2)
    streamed.restore(state)
    assert np.allclose(streamed.step(2)["fourier_error"], first["fourier_error"], rtol=1e-5)


def test_plan_streams_when_frames_do_not_fit():
    free, _ = cp.cuda.runtime.memGetInfo()
    frames = int(free // (256 * 256 * 12)) + 100  # psi + amplitudes alone exceed the GPU
    block, streaming = CupyOps().plan(256, frames, None, None)
    assert streaming and 1 <= block < frames


def test_per_view_kernels_and_modes_match_numpy(case):
    """Per-view probes (sub-pixel shifts, modes) and the mixed-state modulus on the GPU."""
    c, g, h = case, CupyOps(), NumpyOps()
    f, n = c["psi"].shape[0], c["psi"].shape[-1]
    rng = np.random.default_rng(1)
    views = (rng.standard_normal((f, n, n)) + 1j * rng.standard_normal((f, n, n))).astype(np.complex64)
    d = {k: cp.asarray(v) for k, v in c.items()}
    dv = cp.asarray(views)
    out_h = h.gather_product(c["obj"], views, c["iy"], c["ix"], np.empty((f, n, n), np.complex64))
    assert _rel(g.gather_product(d["obj"], dv, d["iy"], d["ix"],
                                 cp.empty((f, n, n), cp.complex64)), out_h) < 1e-6
    th, td = np.zeros_like(c["obj"]), cp.zeros_like(d["obj"])
    h.scatter_conj_probe(th, c["psi"], views, c["iy"], c["ix"], np.empty_like(c["psi"]))
    g.scatter_conj_probe(td, d["psi"], dv, d["iy"], d["ix"], None)
    assert _rel(td, th) < 1e-5
    ph, pd = np.zeros(c["obj"].shape, np.float32), cp.zeros(c["obj"].shape, cp.float32)
    h.scatter_power(ph, views, c["iy"], c["ix"])
    g.scatter_power(pd, dv, d["iy"], d["ix"])
    assert _rel(pd, ph) < 1e-5
    # two modes per frame: frames 0..5 as 3 frames x 2 modes against the first 3 amplitudes
    coef, buf = (2, -1, 1, 1, -1, 0), lambda dt: np.empty((6, n, n), dt)
    psi_h = c["psi"][:6].copy()
    po = h.exit_waves(c["obj"], views[:6], c["iy"][:6], c["ix"][:6], buf(np.complex64))
    err_h, ch_h = h.fourier_update(psi_h, po, c["amp"][:3], None, None, coef, None,
                                   buf(np.complex64), buf(np.float32), buf(np.float32), modes=2)
    psi_d = d["psi"][:6].copy()
    po_d = g.exit_waves(d["obj"], dv[:6], d["iy"][:6], d["ix"][:6])
    err_d, ch_d = g.fourier_update(psi_d, po_d, d["amp"][:3], None, None, coef, None,
                                   cp.empty((6, n, n), cp.complex64), None,
                                   cp.empty((6, n, n), cp.float32), modes=2)
    assert _rel(psi_d, psi_h) < 1e-5 and _rel(err_d, err_h) < 1e-4


def test_subpixel_modes_refinement_match_numpy():
    data = simulate(n_frames=40, frame_size=32, probe_diameter=10, photons=1e6, seed=3,
                    subpixel=True, position_error=1.0, mode_powers=(0.8, 0.2))
    cfg = dict(probe_modes=2, refine_positions=True, position_start=2)
    a = Reconstructor(data, EngineConfig(**cfg), backend="numpy")
    b = Reconstructor(data, EngineConfig(**cfg), backend="cupy")
    ha, hb = a.step(6), b.step(6)
    assert np.allclose(ha["fourier_error"], hb["fourier_error"], rtol=1e-3)
    assert _rel(b.result()["object"], a.result()["object"]) < 1e-3
    assert np.abs(a.positions - b.positions).max() < 1e-3
    assert np.allclose(a.result()["mode_fractions"], b.result()["mode_fractions"], atol=1e-3)


@pytest.mark.parametrize("streamed", [False, True])
def test_gpu_runs_repeat_bit_for_bit(streamed):
    """Fixed-point object sums and fixed-order probe sums: no run-to-run variation."""
    data = simulate(n_frames=64, frame_size=32, probe_diameter=10, photons=1e6, seed=2,
                    subpixel=not streamed)  # sub-pixel views need resident frames
    cfg = dict(host_frames=True, block_frames=9) if streamed else {}
    runs = []
    for _ in range(2):
        rec = Reconstructor(data, EngineConfig(**cfg), backend="cupy")
        hist = rec.step(6, beta=0.9)
        runs.append((hist, rec.result()["object"], rec.result()["probe"]))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1]) and np.array_equal(runs[0][2], runs[1][2])


@pytest.mark.parametrize("with_support", [False, True])
def test_inertia_update_is_the_array_expression_bit_for_bit(with_support):
    """The fused eq. 4/5 update (max(den) never read to the host) gives exactly what the
    array expression with a host scalar gives, so results did not change with it."""
    rng = np.random.default_rng()
    shape = (70, 53)
    c64 = lambda: cp.asarray((rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
                             .astype(np.complex64))
    num, old = c64(), c64()
    den = cp.asarray((rng.random(shape) ** 3 * 50).astype(np.float32))
    den[:3] = 0  # unlit pixels: reg alone holds them
    support = cp.asarray(rng.random(shape) > 0.3) if with_support else None
    for inertia in (1e-4, 1e-3, 0.37):
        reg = inertia * float(den.max())
        expect = (num + reg * old) / (den + reg + 1e-30)
        if support is not None:
            expect *= support
        got = CupyOps().inertia_update(num, old, den, inertia, support)
        assert got.dtype == cp.complex64 and got.shape == shape
        assert cp.array_equal(got, expect)


def test_to_floats_reads_device_scalars_exactly():
    vals = [cp.full((), 0.1, dtype=cp.float32), cp.asarray(np.float64(1) / 3), 2.5,
            cp.asarray(np.float32(3.3)).sum()]
    assert CupyOps.to_floats(vals) == [float(np.float32(0.1)), 1 / 3, 2.5,
                                       float(np.float32(3.3))]
    assert CupyOps.to_floats([]) == []


def test_gpu_divergence_is_raised_with_every_iteration_recorded():
    """Errors are read every 16 iterations on the GPU: the divergence still names the first
    diverged iteration, and the history holds every iteration run."""
    from recon_env.errors import ReconstructionDiverged

    data = simulate(n_frames=24, frame_size=32, probe_diameter=10, photons=1e6, seed=1)
    cpu, gpu = Reconstructor(data), Reconstructor(data, backend="cupy")
    params = dict(beta=2.0, gamma1=10.0, gamma2=-10.0)
    with pytest.raises(ReconstructionDiverged) as first:
        cpu.step(60, **params)
    with pytest.raises(ReconstructionDiverged) as deferred:
        gpu.step(60, **params)
    k = deferred.value.iteration
    assert abs(k - first.value.iteration) <= 1 and "fourier_error" in deferred.value.reason
    assert gpu.iteration == -(-k // 16) * 16
    assert len(gpu.history["fourier_error"]) == gpu.iteration


def test_the_cupy_backend_implements_the_array_ops_interface():
    from recon_env.engine import make_ops
    from recon_env.ops import ArrayOps

    assert isinstance(make_ops("cupy"), ArrayOps)
