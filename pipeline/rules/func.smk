# Voxel entry, function: BOLD -> cleaned voxel and region time series (with the TR).


rule func:
    """dtb func: region time series of one subject, as BIDS derivatives."""
    input:
        bids=bids_input,
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
        atlas=atlas_option(labels=True),
    shell:
        "dtb func --bids {params.bids} --participant-label {wildcards.subject} --out {params.out}"
        " {params.atlas} > {log} 2>&1"
