"""The counter-based generator: known answers, distributions, independence of streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dtb.philox import normal_from_uint32, philox4x32, uniform_from_uint32
from dtb.sim.backends.torch_backend import poisson_by_inversion
from tests.helpers import PHILOX_KNOWN_ANSWERS


@pytest.mark.parametrize("counter, key, expected", PHILOX_KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32(counter, key)) == expected


def test_uniforms_and_normals_have_the_right_distribution():
    ids = torch.arange(200_000, dtype=torch.int64)
    words = philox4x32((ids, 0, 7, 0), (42, 0))
    u = uniform_from_uint32(words[0]).numpy()
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = normal_from_uint32(words[1], words[2]).numpy()
    assert z.dtype == np.float32
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_a_value_depends_only_on_its_counter():
    ids = torch.arange(1000, dtype=torch.int64)
    block = philox4x32((ids, 0, 3, 0), (5, 0))[0]
    alone = philox4x32((ids[517:518], 0, 3, 0), (5, 0))[0]
    assert int(block[517]) == int(alone[0])
    other_step = philox4x32((ids, 0, 4, 0), (5, 0))[0]
    assert np.corrcoef(block.numpy(), other_step.numpy())[0, 1] < 0.1


@pytest.mark.parametrize("lam", [0.08, 0.8, 5.0, 40.0])
def test_poisson_inversion_has_poisson_counts(lam):
    ids = torch.arange(100_000, dtype=torch.int64)
    u = uniform_from_uint32(philox4x32((ids, 0, 1, 0), (9, 0))[2])
    lam_t = torch.full(u.shape, lam, dtype=torch.float64)
    counts = poisson_by_inversion(u, lam_t, torch.exp(-lam_t), int(lam + 20 * lam**0.5 + 30)).numpy()
    assert counts.mean() == pytest.approx(lam, rel=4 * (lam / counts.size) ** 0.5 / lam + 1e-3)
    assert counts.var() == pytest.approx(lam, rel=0.05)


def test_standard_normals_are_standard_and_keyed_by_position():
    from dtb.philox import Stream, standard_normals

    z = standard_normals(3, Stream.ASSIMILATION, 0, 7, (300, 400))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    # a sub-block drawn alone is the same numbers: keyed by (row, col), not by draw order
    assert torch.equal(standard_normals(3, Stream.ASSIMILATION, 0, 7, (5, 6)), z[:5, :6])
    assert not torch.equal(standard_normals(3, Stream.ASSIMILATION, 0, 8, (5, 6)), z[:5, :6])
    assert not torch.equal(standard_normals(3, Stream.ASSIMILATION, 1, 7, (5, 6)), z[:5, :6])
