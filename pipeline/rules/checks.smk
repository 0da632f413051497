# Machine self-checks, run only when asked for: `snakemake --cores 2 mpi_check`.


rule mpi_check:
    """Ranks of one MPI job greet each other (mpi4py's hello world), through the workflow's launcher."""
    output:
        RESULTS / "checks" / "mpi_helloworld.txt",
    log:
        LOGS / "checks" / "mpi_helloworld.log",
    conda:
        "../envs/dtb.yaml"
    threads: 1
    resources:
        tasks=config["checks"]["mpi_ranks"],
        mpi=mpi_launcher,
        mem_mb=500,
    shell:
        "{resources.mpi} -n {resources.tasks} python -m mpi4py.bench helloworld > {output} 2> {log}"
