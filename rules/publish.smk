# Stage 5: the publication package (results, report, RO-Crate) of each
# experiment, sent to the publication facility. Run after the report:
#   snakemake --profile local --report results/report.html
#   snakemake --profile local publish_all


rule package:
    input:
        # statistics.h5, its tables and figures; for an experiment of image series its
        # table of series and figures (package_inputs in common.smk)
        unpack(package_inputs),
        report=f"{RESULTS}/report.html",
    output:
        package=directory(f"{RESULTS}/{{experiment}}/package"),
    params:
        experiment=lambda wc: experiment(wc),
        # the experiment's Parquet cell and class tables (partitioned by batch), or its
        # series' tracks and dynamics files
        tables=lambda wc: (
            ([f"{RESULTS}/{wc.experiment}/dynamics"] if experiment_model(wc).series is True else [])
            if wc.experiment in SERIES_EXPERIMENTS
            else [
                f"{RESULTS}/cells/experiment={wc.experiment}",
                f"{RESULTS}/classes/experiment={wc.experiment}",
            ]
        ),
        people=config["people"],  # as written (validate() filled the model's default)
        license=SETTINGS.license,
    log:
        f"{RESULTS}/{{experiment}}/logs/package.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/package.tsv"
    conda:
        "../envs/publish.yaml"
    script:
        "../scripts/package.py"


rule publish:
    input:
        package=f"{RESULTS}/{{experiment}}/package",
    output:
        record=f"{RESULTS}/{{experiment}}/published.json",
    params:
        facility_name=lambda wc: SETTINGS.publication.facility,
        facility=lambda wc: config["facilities"][SETTINGS.publication.facility],
        path=lambda wc: f"{SETTINGS.publication.path}/{wc.experiment}",
    log:
        f"{RESULTS}/{{experiment}}/logs/publish.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/publish.tsv"
    conda:
        "../envs/transfer.yaml"
    script:
        "../scripts/publish.py"


rule publish_all:
    input:
        expand(f"{RESULTS}/{{experiment}}/published.json", experiment=EXPERIMENTS),
