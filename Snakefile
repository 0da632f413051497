# dtb: digital twin brain workflow.
#
#   snakemake --cores 2                                   # the embedded demo (config/config.yaml)
#   snakemake --cores 2 --configfile my.yaml              # your subjects and settings
#   snakemake --workflow-profile config/profiles/slurm    # on a SLURM cluster (docs/hpc.md)
#
# The config is validated against pipeline/schemas/config.schema.yaml before any job runs.
# Rules: pipeline/rules/*.smk, one per stage; each calls one `dtb` subcommand.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "pipeline/report/workflow.rst"


include: "pipeline/rules/common.smk"
include: "pipeline/rules/fetch.smk"
include: "pipeline/rules/anat.smk"
include: "pipeline/rules/dwi.smk"
include: "pipeline/rules/func.smk"
include: "pipeline/rules/network.smk"
include: "pipeline/rules/simulate.smk"
include: "pipeline/rules/assimilate.smk"
include: "pipeline/rules/report.smk"
include: "pipeline/rules/checks.smk"


# Every subject's twin report (and the GPU plan of its network).
rule all:
    default_target: True
    input:
        all_targets(),
