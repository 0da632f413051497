"""`dtb network build` reads the region-level input form: TSVs with region labels as header
and index (connectome) and a stats table with a neuron_count column (docs/workflow.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dtb.cli import main
from dtb.network.store import load_block, store_info

LABELS = ["Frontal_L", "Frontal_R", "Thalamus_L"]


def _matrix() -> np.ndarray:
    """Asymmetric streamline counts, row = source region, column = target region."""
    return np.array([[0.0, 12.0, 1.0], [2.0, 0.0, 7.0], [30.0, 5.0, 0.0]])


def _build(tmp_path, name, counts, connectome):
    out = tmp_path / f"{name}.zarr"
    args = ["network", "build", "--counts", str(counts), "--connectome", str(connectome)]
    assert main([*args, "--indegree", "20", "--seed", "4", "--out", str(out)]) == 0
    return out


def test_labelled_tables_build_the_same_network_as_plain_arrays_with_source_rows_transposed(tmp_path):
    plain_counts, plain_matrix = tmp_path / "counts.tsv", tmp_path / "matrix.tsv"
    np.savetxt(plain_counts, [400, 300, 500])
    np.savetxt(plain_matrix, _matrix().T, delimiter="\t")  # the builder's convention: row = inputs of a target
    stats = tmp_path / "sub-01_atlas-AAL2_desc-neuroncount_stats.tsv"
    pd.DataFrame({"region": LABELS, "gm_volume_mm3": [1.0, 2.0, 3.0], "neuron_count": [400, 300, 500]}).to_csv(
        stats, sep="\t", index=False
    )
    relmat = tmp_path / "sub-01_atlas-AAL2_desc-streamlines_relmat.tsv"
    pd.DataFrame(_matrix(), index=pd.Index(LABELS, name="region"), columns=LABELS).to_csv(relmat, sep="\t")

    plain = _build(tmp_path, "plain", plain_counts, plain_matrix)
    labelled = _build(tmp_path, "labelled", stats, relmat)
    assert store_info(labelled)["n_neurons"] == store_info(plain)["n_neurons"] == 1200
    a, b = load_block(plain, 0), load_block(labelled, 0)
    np.testing.assert_array_equal(a.sources, b.sources)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    # and not the same as reading the relmat untransposed
    untransposed = tmp_path / "untransposed.tsv"
    np.savetxt(untransposed, _matrix(), delimiter="\t")
    c = load_block(_build(tmp_path, "untransposed", plain_counts, untransposed), 0)
    assert not np.array_equal(a.sources, c.sources)


def test_single_value_column_with_header_is_read(tmp_path):
    counts = tmp_path / "counts.tsv"
    counts.write_text("neurons\n400\n300\n500\n")
    relmat = tmp_path / "relmat.tsv"
    pd.DataFrame(_matrix(), index=LABELS, columns=LABELS).to_csv(relmat, sep="\t")
    assert store_info(_build(tmp_path, "single", counts, relmat))["n_neurons"] == 1200


def test_labelled_table_that_is_no_matrix_is_a_clear_error(tmp_path, capsys):
    stats = tmp_path / "stats.tsv"
    pd.DataFrame({"region": LABELS, "a": [1, 2, 3], "b": [4, 5, 6]}).to_csv(stats, sep="\t", index=False)
    relmat = tmp_path / "relmat.tsv"
    pd.DataFrame(_matrix(), index=LABELS, columns=LABELS).to_csv(relmat, sep="\t")
    out = tmp_path / "bad.zarr"
    code = main(["network", "build", "--counts", str(stats), "--connectome", str(relmat), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and str(stats) in err and "neuron_count" in err and "Traceback" not in err
    assert not out.exists()
