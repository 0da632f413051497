# Fitting the twin to BOLD: the ensemble Kalman filter over TR windows, then the re-simulation.
#
# dtb assimilate appends one TR window at a time to a work store and checkpoints it; the
# declared output is only moved into place when the run is complete. Snakemake deletes a
# job's declared outputs before it runs, so after a walltime kill `--rerun-incomplete`
# restarts the job and `dtb assimilate --resume` continues from the last complete window
# of the work store instead of starting over.


localrules:
    twin_settings,


rule twin_settings:
    """The twin's settings of the config (twin keys, seed, compute), as the YAML file dtb reads."""
    output:
        settings=RESULTS / "sub-{subject}" / "twin" / "sub-{subject}_settings.yaml",
    log:
        LOGS / "twin_settings" / "sub-{subject}.log",
    params:
        settings=TWIN_SETTINGS,
    run:
        write_yaml(params.settings, output.settings, log[0])


rule assimilate:
    """dtb assimilate: the twin run store (observation, network, assimilation groups)."""
    input:
        unpack(twin_inputs),
        settings=rules.twin_settings.output.settings,
        network=rules.network.output.network,
        plan=rules.plan.output.plan,
    output:
        run=directory(RESULTS / "sub-{subject}" / "twin" / "sub-{subject}_twin.zarr"),
    log:
        LOGS / "assimilate" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: COMPUTE["threads"]
    resources:
        **HEAVY_RESOURCES,
    params:
        inputs=lambda wildcards: str(twin_inputs_root()),
        work=lambda wildcards: str(
            RESULTS / f"sub-{wildcards.subject}" / "twin" / "work" / "run.zarr"
        ),
        seed=seed_option(),
        ranks=ranks_option(),
        layout=layout_option(),
        launcher=launcher_env,
    shell:
        "resume=''; if [ -d {params.work:q} ]; then resume=--resume; fi; "
        "{params.launcher} dtb assimilate --config {input.settings} --inputs {params.inputs}"
        " --participant-label {wildcards.subject} --network {input.network:q} --out {params.work:q} $resume"
        " {params.seed} {params.ranks} {params.layout} > {log} 2>&1"
        " && mv {params.work:q} {output.run:q}"


rule resimulate:
    """dtb resimulate: one brain driven by the assimilated track; adds /resimulation and /metrics."""
    input:
        run=rules.assimilate.output.run,
        network=rules.network.output.network,
    output:
        done=touch(
            RESULTS / "sub-{subject}" / "twin" / "sub-{subject}_resimulated.done"
        ),
    log:
        LOGS / "resimulate" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: COMPUTE["threads"]
    resources:
        **HEAVY_RESOURCES,
    params:
        seed=seed_option(),
        ranks=ranks_option(),
        launcher=launcher_env,
    shell:
        "{params.launcher} dtb resimulate {input.run} --network {input.network:q} {params.seed} {params.ranks}"
        " > {log} 2>&1"
