# The spiking network of each subject, and how many GPUs it needs.


rule network:
    """dtb network build: populations and fixed in-degree synapses, one block per rank."""
    input:
        unpack(twin_inputs),
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
        counts=input_file(COUNTS_FILE),
        connectome=input_file(CONNECTOME_FILE),
        model=config["network"]["model"],
        indegree=config["network"]["indegree"],
        seed=seed_option(),
        ranks=RANKS,
        members=config["assimilation"]["members"],
    shell:
        "dtb network build --counts {params.counts} --connectome {params.connectome}"
        " --model {params.model} --indegree {params.indegree} {params.seed} --ranks {params.ranks}"
        " --members {params.members} --out {output.network} > {log} 2>&1"


rule plan:
    """dtb plan: memory per rank of the assimilation ensemble; fails early when it cannot fit."""
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
        members=config["assimilation"]["members"],
        gpus=f"--gpus {GPUS}" if GPUS else "",
    shell:
        "dtb plan --network {input.network} --members {params.members} {params.gpus}"
        " --out {output.plan} > {log} 2>&1"
