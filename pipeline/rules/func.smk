# Voxel entry, function: BOLD -> cleaned voxel and region time series (with the TR).


rule func:
    """dtb func: region time series of one subject, as BIDS derivatives."""
    input:
        bids=bids_input,
        anat=rules.anat.output[0],  # the voxels holding neurons (dtb anat) are func's voxel mask
    output:
        directory(DERIVATIVES / "dtb" / "sub-{subject}" / "func"),
    log:
        LOGS / "func" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        bids=bids_param,
        out=lambda wildcards: str(DERIVATIVES),
        atlas=atlas_option(),
        grid_mm=VOXEL["grid_mm"],
        band=f"--high-pass {VOXEL['high_pass_hz']} --low-pass {VOXEL['low_pass_hz']}",
        motion=preproc_option("motion_correction", "off"),
        normalisation=preproc_option("normalisation", "off"),
    shell:
        "dtb func --bids {params.bids} --participant-label {wildcards.subject} --out {params.out}"
        " --grid-mm {params.grid_mm} {params.atlas} {params.band} {params.motion} {params.normalisation}"
        " > {log} 2>&1"
