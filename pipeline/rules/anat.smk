# Voxel entry, anatomy: T1w -> grey matter -> neuron counts per voxel and per atlas region.


rule anat:
    """dtb anat: neuron counts on the twin's grid, as BIDS derivatives."""
    input:
        bids=bids_input,
    output:
        directory(DERIVATIVES / "dtb" / "sub-{subject}" / "anat"),
    log:
        LOGS / "anat" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        bids=bids_param,
        out=lambda wildcards: str(DERIVATIVES),
        grid_mm=VOXEL["grid_mm"],
        total_neurons=TWIN.neurons_total,
        atlas=atlas_option(),
        registration=preproc_option("registration", "none"),
    shell:
        "dtb anat --bids {params.bids} --participant-label {wildcards.subject} --out {params.out}"
        " --grid-mm {params.grid_mm} --total-neurons {params.total_neurons} {params.atlas}"
        " {params.registration} > {log} 2>&1"
