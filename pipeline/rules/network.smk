# The spiking network of each subject (the one the twin runs), and how many GPUs it needs.


rule network:
    """dtb network build: the twin's network of one subject, from the twin settings (one network)."""
    input:
        unpack(twin_inputs),
        settings=twin_settings_file,
    output:
        network=directory(
            RESULTS / "sub-{subject}" / "network" / "sub-{subject}_network.zarr"
        ),
    log:
        LOGS / "network" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: 1
    resources:
        mem_mb=COMPUTE["mem_mb"],
    params:
        inputs=lambda wildcards: str(twin_inputs_root()),
        seed=seed_option(),
        ranks=RANKS,
        memory=memory_option(),
    shell:
        "dtb network build --inputs {params.inputs} --participant-label {wildcards.subject}"
        " --config {input.settings} {params.seed} --ranks {params.ranks} {params.memory}"
        " --out {output.network} > {log} 2>&1"


rule plan:
    """dtb plan: memory per rank of the twin's ensemble on its network; fails early when it cannot fit."""
    input:
        network=rules.network.output.network,
    output:
        plan=RESULTS / "sub-{subject}" / "network" / "sub-{subject}_plan.json",
    log:
        LOGS / "plan" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: 1
    params:
        gpus=f"--gpus {GPUS}" if GPUS else "",
    shell:
        "dtb plan --network {input.network} {params.gpus}"
        " --out {output.plan} > {log} 2>&1"
