# Plain simulations of network description files (config: simulate.descriptions), on
# compute.ranks MPI ranks: `dtb simulate --ranks N` re-executes itself under the launcher.


rule simulate:
    """dtb simulate: population counts, spikes and samples of one description, as zarr."""
    input:
        description=lambda wildcards: config["simulate"]["descriptions"][wildcards.name],
    output:
        directory(RESULTS / "simulations" / "{name}.zarr"),
    log:
        LOGS / "simulate" / "{name}.log",
    conda:
        "../envs/dtb.yaml"
    threads: COMPUTE["threads"]
    resources:
        **HEAVY_RESOURCES,
    params:
        duration=(
            f"--duration {config['simulate']['duration_ms']}"
            if config["simulate"]["duration_ms"]
            else ""
        ),
        members=config["simulate"]["members"],
        backend=COMPUTE["backend"],
        seed=seed_option(),
        ranks=ranks_option(),
        launcher=launcher_env,
    shell:
        "{params.launcher} dtb simulate {input.description} --out {output} {params.duration}"
        " --members {params.members} --backend {params.backend} {params.seed} {params.ranks}"
        " --progress log > {log} 2>&1"
