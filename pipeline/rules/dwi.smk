# Voxel entry, diffusion: DWI -> tractography -> voxel and region connectomes.


rule dwi:
    """dtb dwi: structural connectome of one subject, as BIDS derivatives."""
    input:
        bids=bids_input,
    output:
        directory(DERIVATIVES / "dtb" / "sub-{subject}" / "dwi"),
    log:
        LOGS / "dwi" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: COMPUTE["threads"]
    resources:
        mem_mb=4000,
    params:
        bids=bids_param,
        out=lambda wildcards: str(DERIVATIVES),
        atlas=atlas_option(),
    shell:
        "dtb dwi --bids {params.bids} --participant-label {wildcards.subject} --out {params.out}"
        " {params.atlas} > {log} 2>&1"
