# The per-subject twin report: one self-contained HTML page and its figures.


rule report:
    """dtb report: HTML twin report (figures, tables, provenance) of one subject."""
    input:
        run=rules.assimilate.output.run,
        resimulated=rules.resimulate.output.done,
    output:
        html=report(
            RESULTS / "sub-{subject}" / "report" / "sub-{subject}_report.html",
            caption="../report/twin_report.rst",
            category="Twin report",
            subcategory="sub-{subject}",
        ),
        figures=report(
            directory(RESULTS / "sub-{subject}" / "report" / "figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="Figures",
            subcategory="sub-{subject}",
        ),
    log:
        LOGS / "report" / "sub-{subject}.log",
    conda:
        "../envs/dtb.yaml"
    threads: 1
    params:
        atlas=report_atlas_option(),
    shell:
        "dtb report {input.run} --out {output.html} --figures {output.figures} {params.atlas} > {log} 2>&1"
