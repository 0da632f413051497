"""The Vw-dHMDA driver on a small spiking twin: twin experiments (OSSE), checkpoint/resume, bad input.

A truth run with a known h(t) in two input regions produces synthetic BOLD; the filter,
which does not know h, must recover it (r >= 0.8), its forecast must track the observations,
its spread must cover the truth, and a one-brain re-simulation with the recovered track must
reproduce the non-input regions of the truth run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtb.assembly.forward import make_simulation
from dtb.assembly.region import build_region_model
from dtb.assembly.settings import ModelSettings
from dtb.assim.enkf import EnKFSettings
from dtb.assim.hmda import BOUNDED_RATIO, CHECKPOINT_NAME, HMDA, HMDASettings
from dtb.errors import AssimilationError
from dtb.io.store import open_tree
from dtb.sim.backends import resolve_backend_name
from dtb.sim.backends.base import ARITHMETIC_CONTRACT

BACKEND = resolve_backend_name("auto")  # cuda_ext (C++) when it builds: bitwise the torch results, faster

N_REGIONS = 6
INPUTS = [0, 1]
TR_MS = 500.0
LABELS = [f"r{i}" for i in range(N_REGIONS)]


def _region_model():
    rng = np.random.default_rng(0)
    sc = rng.random((N_REGIONS, N_REGIONS))
    sc = sc + sc.T
    np.fill_diagonal(sc, 0.0)
    settings = ModelSettings(indegree=20, min_excitatory=4, min_inhibitory=1, dt_ms=1.0)
    return build_region_model(np.full(N_REGIONS, 50), sc, LABELS, settings, graph_seed=3)


def _h_true(n_frames: int) -> np.ndarray:
    t = np.arange(n_frames) * TR_MS / 1000.0
    return np.stack([0.12 + 0.08 * np.sin(2 * np.pi * t / 20.0), 0.12 + 0.08 * np.cos(2 * np.pi * t / 25.0)], axis=1)


def _drive(regional, h_track) -> tuple[np.ndarray, np.ndarray]:
    """Run ``regional`` (one member) with h per frame in the input regions; BOLD and rates per frame."""
    bold, rate = [], []
    for h in h_track:
        regional.set_region_hyperparameter("i_ext", INPUTS, h)
        out = regional.advance(TR_MS)
        bold.append(out.bold[0].numpy())
        rate.append(out.rate_hz[0].numpy())
    return np.array(bold), np.array(rate)


@pytest.fixture(scope="module")
def truth():
    torch.set_num_threads(1)
    region_model = _region_model()
    h = _h_true(90)
    regional = make_simulation(region_model, n_members=1, seed=99, gain_seed=5, backend=BACKEND)
    bold, rate = _drive(regional, h)
    noise = np.random.default_rng(1).normal(0.0, 1e-4, bold.shape)
    return {"model": region_model, "h": h, "bold": bold, "observed": bold + noise, "rate": rate}


def _driver(region_model, *, inputs=INPUTS, members=8, warmup=10, checkpoint_every=20, seed=4, rho=0.8, rw=1.0, **hmda):
    regional = make_simulation(region_model, n_members=members, seed=seed, gain_seed=6, backend=BACKEND)
    settings = HMDASettings(
        warmup_windows=warmup,
        checkpoint_every=checkpoint_every,
        **hmda,
        enkf=EnKFSettings(seed=seed, rho=rho, random_walk_std=rw),
    )
    return HMDA(regional, inputs, LABELS, TR_MS, settings)


def test_twin_experiment_recovers_h_and_reproduces_noninput_regions(truth, tmp_path):
    driver = _driver(truth["model"], rw=2.0)
    store = driver.run(truth["observed"], tmp_path / "run.zarr", progress="none")
    a = open_tree(store)["assimilation"]
    k = 10
    h_mean = a["h_analysis_mean"].values
    h_std = a["h_analysis_std"].values
    bold_f = a["bold_forecast"].values.mean(axis=1)
    for loc, r in enumerate(INPUTS):
        r_h = np.corrcoef(h_mean[k:, loc], truth["h"][k:, loc])[0, 1]
        r_bold = np.corrcoef(bold_f[k:, r], truth["observed"][k:, r])[0, 1]
        print(f"input {r}: h recovery r = {r_h:.3f}, forecast BOLD r = {r_bold:.3f}")
        assert r_h >= 0.8
        assert r_bold >= 0.9
    # the forecast spread (analysis spread + random-walk step) covers the truth
    z = np.abs(a["h_forecast_mean"].values[k:] - truth["h"][k:]) / a["h_forecast_std"].values[k:]
    coverage = float(np.mean(z < 3.0))
    print(f"truth within 3 forecast SDs in {coverage:.0%} of windows (analysis SD median {np.median(h_std[k:]):.4f})")
    assert coverage >= 0.7
    # re-simulation: one brain, fresh gains and noise, driven by the recovered h track
    resim = make_simulation(truth["model"], n_members=1, seed=123, gain_seed=77, backend=BACKEND)
    bold_resim, _ = _drive(resim, h_mean)
    for r in range(N_REGIONS):
        if r in INPUTS:
            continue
        r_non = np.corrcoef(bold_resim[k:, r], truth["bold"][k:, r])[0, 1]
        print(f"non-input region {r}: re-simulation vs truth r = {r_non:.3f}")
        assert r_non >= 0.3


def test_all_regions_option_assimilates_every_region(truth, tmp_path):
    driver = _driver(truth["model"], inputs=list(range(N_REGIONS)), members=8)
    store = driver.run(truth["observed"][:60], tmp_path / "all.zarr", progress="none")
    a = open_tree(store)["assimilation"]
    k = 10
    bold_f = a["bold_forecast"].values.mean(axis=1)
    r = [np.corrcoef(bold_f[k:, i], truth["observed"][k:60, i])[0, 1] for i in range(N_REGIONS)]
    print("all-regions forecast r:", np.round(r, 3))
    # driven regions are tracked closely; the others' BOLD moves only through the connectome
    # and network noise (small signal), so their one-step forecasts are weaker
    assert min(r[i] for i in INPUTS) >= 0.9
    assert np.mean(r) >= 0.7
    # the non-driven regions' h stays near the low end, the driven ones' follow the truth
    h_mean = a["h_analysis_mean"].values
    for loc in INPUTS:
        assert np.corrcoef(h_mean[k:, loc], truth["h"][k:60, loc])[0, 1] >= 0.5


def test_resume_after_kill_equals_uninterrupted_run(truth, tmp_path):
    obs = truth["observed"][:16]
    full = _driver(truth["model"], members=3, warmup=4, checkpoint_every=3).run(
        obs, tmp_path / "a.zarr", progress="none"
    )
    killed = tmp_path / "b.zarr"
    # killed in window 8: windows 6 and 7 were computed after the checkpoint at 6 and are lost
    _driver(truth["model"], members=3, warmup=4, checkpoint_every=3).run(obs, killed, progress="none", stop_after=8)
    assert (killed / CHECKPOINT_NAME).exists()
    part = open_tree(killed)["assimilation"]
    assert part.sizes["time"] == 6  # at most checkpoint_every windows lost
    _driver(truth["model"], members=3, warmup=4, checkpoint_every=3).run(obs, killed, progress="none", resume=True)
    a, b = open_tree(full)["assimilation"], open_tree(killed)["assimilation"]
    assert a.sizes["time"] == b.sizes["time"] == 16
    for name in ("h_members", "bold_forecast", "rate_forecast", "h_forecast_mean", "innovation"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_lead_forecasts_leave_the_run_unchanged_and_match_its_own_forecasts(truth, tmp_path):
    """k-step forecasts from the analysis state (docs/fidelity.md) are side branches of the run."""
    obs = truth["observed"][:16]
    plain = _driver(truth["model"], members=3, warmup=4).run(
        obs, tmp_path / "a.zarr", progress="none", assimilate_frames=12
    )
    led = _driver(truth["model"], members=3, warmup=4).run(
        obs, tmp_path / "b.zarr", progress="none", assimilate_frames=12, lead_forecasts=3, lead_from=9, lead_every=2
    )
    a, b = open_tree(plain)["assimilation"], open_tree(led)["assimilation"]
    for name in ("h_members", "bold_forecast", "rate_forecast", "innovation"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    lead = b["bold_lead"].values  # (time, lead, region)
    assert lead.shape == (16, 3, N_REGIONS) and np.isnan(lead[:9]).all() and np.isnan(lead[10::2]).all()
    assert np.isfinite(lead[9::2]).all()  # after every 2nd window from window 9
    forecast_mean = a["bold_forecast"].values.mean(axis=1)
    # from window 11 on the run itself walks no more (held out, h frozen): the run's forecast of
    # frame w + j + 1 is the j + 1 step lead forecast made after window w, bit for bit
    for w in (11, 13, 15):
        for j in range(min(3, 15 - w)):
            np.testing.assert_array_equal(lead[w, j], forecast_mean[w + j + 1])
    with pytest.raises(AssimilationError, match="lead_forecasts must be"):
        _driver(truth["model"], members=3, warmup=4).run(obs, tmp_path / "c.zarr", progress="none", lead_forecasts=-1)
    with pytest.raises(AssimilationError, match="lead_every must be"):
        _driver(truth["model"], members=3, warmup=4).run(obs, tmp_path / "c.zarr", progress="none", lead_every=0)


def test_resume_refuses_a_checkpoint_of_another_engine_arithmetic(truth, tmp_path):
    import zarr

    obs = truth["observed"][:10]
    store = tmp_path / "d.zarr"
    _driver(truth["model"], members=2, warmup=2, checkpoint_every=3).run(obs, store, progress="none", stop_after=5)
    root = zarr.open_group(store, mode="r+")
    engine = dict(root.attrs["engine"])
    engine["arithmetic_contract"] = 1  # as if written before exp_contract
    root.attrs["engine"] = engine
    before = open_tree(store)["assimilation"]["h_members"].values
    with pytest.raises(
        AssimilationError, match=rf"arithmetic_contract: stored 1, now {ARITHMETIC_CONTRACT}.*overwrite"
    ):
        _driver(truth["model"], members=2, warmup=2, checkpoint_every=3).run(obs, store, progress="none", resume=True)
    np.testing.assert_array_equal(open_tree(store)["assimilation"]["h_members"].values, before)  # left as it was


def test_resume_refuses_a_store_started_with_other_assimilation_settings(truth, tmp_path):
    """A store whose settings lack balloon_update was started when "linear" was the only update."""
    import zarr

    obs = truth["observed"][:10]
    store = tmp_path / "e.zarr"
    _driver(truth["model"], members=2, warmup=2, checkpoint_every=3, balloon_update="linear").run(
        obs, store, progress="none", stop_after=5
    )
    before = open_tree(store)["assimilation"]["h_members"].values
    with pytest.raises(AssimilationError, match=r"balloon_update: stored 'linear', now 'bounded'.*overwrite"):
        _driver(truth["model"], members=2, warmup=2, checkpoint_every=3, balloon_update="bounded").run(
            obs, store, progress="none", resume=True
        )
    root = zarr.open_group(store, mode="r+")
    root.attrs["assimilation_settings"] = {
        k: v for k, v in root.attrs["assimilation_settings"].items() if k != "balloon_update"
    }
    with pytest.raises(AssimilationError, match=r"balloon_update: stored 'linear', now 'bounded'"):
        _driver(truth["model"], members=2, warmup=2, checkpoint_every=3, balloon_update="bounded").run(
            obs, store, progress="none", resume=True
        )
    np.testing.assert_array_equal(open_tree(store)["assimilation"]["h_members"].values, before)  # left as it was
    # checkpoint_every does not change the run: resuming with another one continues it
    _driver(truth["model"], members=2, warmup=2, checkpoint_every=4, balloon_update="linear").run(
        obs, store, progress="none", resume=True
    )
    assert open_tree(store)["assimilation"].sizes["time"] == 10


def test_resume_of_complete_run_is_a_no_op(truth, tmp_path):
    obs = truth["observed"][:8]
    store = _driver(truth["model"], members=2, warmup=2, checkpoint_every=4).run(
        obs, tmp_path / "c.zarr", progress="none"
    )
    before = open_tree(store)["assimilation"]["h_members"].values
    _driver(truth["model"], members=2, warmup=2, checkpoint_every=4).run(obs, store, progress="none", resume=True)
    np.testing.assert_array_equal(open_tree(store)["assimilation"]["h_members"].values, before)


def test_existing_store_is_not_overwritten_without_consent(truth, tmp_path):
    obs = truth["observed"][:8]
    store = _driver(truth["model"], members=2, warmup=2).run(obs, tmp_path / "d.zarr", progress="none")
    with pytest.raises(AssimilationError, match="already exists"):
        _driver(truth["model"], members=2, warmup=2).run(obs, store, progress="none")


@pytest.mark.parametrize(
    "case, match",
    [
        ("nan", "NaN"),
        ("short", "warm-up"),
        ("shape", "shape"),
    ],
)
def test_bad_observations_are_refused(truth, tmp_path, case, match):
    obs = truth["observed"][:20].copy()
    if case == "nan":
        obs[12, INPUTS[0]] = np.nan
    elif case == "short":
        obs = obs[:5]
    elif case == "shape":
        obs = obs[:, :3]
    with pytest.raises(AssimilationError, match=match):
        _driver(truth["model"], members=2, warmup=10).run(obs, tmp_path / "e.zarr", progress="none")
    assert not (tmp_path / "e.zarr").exists()


def _balloon(driver) -> dict[str, torch.Tensor]:
    st = driver.regional.state
    return {name: getattr(st, name)[:, INPUTS].clone() for name in ("s", "f", "v", "q")}


@pytest.mark.parametrize("update", ["linear", "log", "bounded", "none"])
def test_balloon_update_modes_share_h_and_keep_states_physical(truth, update):
    """One analysis from the same forecast: every mode updates h~ alike (each component's gain is its
    own covariance with the predicted BOLD); "none" leaves the Balloon states as forecast; "log" and
    "bounded" move v the same way as "linear", "log" keeps f, v, q positive by construction and
    "bounded" within a factor BOUNDED_RATIO of the forecast."""
    runs = {}
    for mode in ("linear", update):
        driver = _driver(truth["model"], members=8, warmup=0, balloon_update=mode)
        for _ in range(6):  # let the Balloon states leave their resting values
            driver.forecast(walk=False)
            driver.window += 1
        rec = driver.forecast()
        before = _balloon(driver)
        # an observation well below every member's BOLD: the analysis must pull the ensemble down
        frame = driver.regional.bold().numpy().min(axis=0) - 0.02
        driver.analyse(frame, torch.as_tensor(rec["rate_forecast"]))
        runs[mode] = (before, _balloon(driver), driver.h_tilde.clone())
    (before, linear, h_linear), (_, after, h) = runs["linear"], runs[update]
    torch.testing.assert_close(h, h_linear, rtol=1e-12, atol=1e-12)
    assert not torch.equal(linear["v"], before["v"])  # the default writes the states back
    if update == "none":
        for name in before:
            assert torch.equal(after[name], before[name]), name
    else:
        lo, hi = HMDASettings.clip, HMDASettings.clip_upper
        for name in ("f", "v", "q"):
            assert bool(((after[name] >= lo) & (after[name] <= hi)).all()), name
        moved, moved_linear = (after["v"] - before["v"]).mean(0), (linear["v"] - before["v"]).mean(0)
        assert bool((torch.sign(moved) == torch.sign(moved_linear)).all())
        if update == "log":  # a multiplicative update, not the additive one
            assert not torch.allclose(after["v"], linear["v"], rtol=1e-9, atol=0)
        if update == "bounded":
            for name in ("f", "v", "q"):
                ratio = after[name] / before[name]
                assert bool(((ratio >= 1 / BOUNDED_RATIO - 1e-12) & (ratio <= BOUNDED_RATIO + 1e-12)).all()), name
            # a small update passes unchanged, a large one is shrunk by one factor for all four states
            step, step_linear = after["v"] - before["v"], linear["v"] - before["v"]
            alpha = step / step_linear
            print("bounded: alpha", alpha.min().item(), alpha.max().item())
            assert bool(((alpha > 0) & (alpha <= 1 + 1e-12)).all())
            assert alpha.min() < 0.95 and alpha.max() == pytest.approx(1.0)  # this observation gives both cases
            torch.testing.assert_close(after["s"] - before["s"], alpha * (linear["s"] - before["s"]))


def test_bad_settings_are_refused(truth):
    with pytest.raises(AssimilationError, match="at least 2"):
        _driver(truth["model"], members=1)
    regional = make_simulation(truth["model"], n_members=2, seed=1, gain_seed=2, backend=BACKEND)
    with pytest.raises(AssimilationError, match="multiple of the engine step|whole number"):
        HMDA(regional, INPUTS, LABELS, 720.5, HMDASettings())
    with pytest.raises(AssimilationError, match="region indices"):
        HMDA(regional, [0, 9], LABELS, 500.0, HMDASettings())
    with pytest.raises(AssimilationError, match="lower < upper"):
        HMDASettings(lower=0.3, upper=0.1)
    with pytest.raises(AssimilationError, match="balloon_update.*linear"):
        HMDASettings(balloon_update="logarithmic")
