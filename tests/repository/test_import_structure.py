"""The import contracts of pyproject.toml stay complete as modules are added (docs/architecture.md, "Layers").

``lint-imports`` checks the contracts; these tests check that the contracts still name every module
they are meant to cover, so a new module cannot slip past them unnoticed.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

import dtb
import dtb.sim
import dtb.sim.backends

try:
    import tomllib
except ImportError:  # Python 3.10: tomli, which import-linter needs there too
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
#: what cuda_ext may import from dtb: the backend interface and the packages below it
CUDA_EXT_MAY_IMPORT = {
    "dtb.errors",
    "dtb.fpmath",
    "dtb.kernel_build",
    "dtb.philox",
    "dtb.sim.backends.base",
    "dtb.sim.backends.poisson_tables",
}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert set(config["root_packages"]) == {"dtb", "cuda_ext"}
    return {c["name"]: c for c in config["contracts"]}


def _modules(package) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")}


def test_cuda_ext_contract_forbids_every_dtb_module_but_the_backend_interface():
    forbidden = set(_contracts()["cuda_ext imports only the backend interface"]["forbidden_modules"])
    # every top-level dtb module or package, every dtb.sim module, and dtb.sim.backends' modules
    candidates = (_modules(dtb) - {"dtb.sim"}) | (_modules(dtb.sim) - {"dtb.sim.backends"})
    candidates |= _modules(dtb.sim.backends)
    uncovered = candidates - forbidden - CUDA_EXT_MAY_IMPORT
    assert not uncovered, (
        f"add these to the cuda_ext contract's forbidden_modules (pyproject.toml): {sorted(uncovered)}"
    )
    assert not forbidden & CUDA_EXT_MAY_IMPORT


def test_what_cuda_ext_imports_never_imports_cuda_ext_back():
    """dtb.sim.backends -> cuda_ext -> dtb.sim.backends.base is one-way: the modules cuda_ext may import
    are exactly the sources of the contract that forbids them cuda_ext."""
    contract = _contracts()["the backend interface never imports cuda_ext"]
    assert contract["type"] == "forbidden" and contract["forbidden_modules"] == ["cuda_ext"]
    assert set(contract["source_modules"]) == CUDA_EXT_MAY_IMPORT


def test_only_the_backend_registry_may_import_cuda_ext():
    contract = _contracts()["only the backend registry loads cuda_ext"]
    assert contract["type"] == "protected"
    assert contract["protected_modules"] == ["cuda_ext"] and contract["allowed_importers"] == ["dtb.sim.backends"]


def test_network_sampler_layers_name_every_sampler_module():
    layers = _contracts()["the network samplers form no cycle"]["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    assert named == {"dtb.network.build", "dtb.network.compiled", "dtb.network.device", "dtb.network.sampling"}
    assert layers[-1] == "dtb.network.sampling", "the reference sampler must be the bottom layer"
