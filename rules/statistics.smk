# Stage 3: per experiment, cells of every image -> statistics and figures.


rule statistics:
    input:
        columns=column_batches,
        raw=raw_images,
        refused=f"{SCRATCH}/{{experiment}}/refused.tsv",
    output:
        cells=f"{RESULTS}/{{experiment}}/statistics.h5",
        images=report(
            f"{RESULTS}/{{experiment}}/images.tsv",
            caption="../report/images.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"table": "per-image summary"},
        ),
        rejected=report(
            f"{RESULTS}/{{experiment}}/rejected.tsv",
            caption="../report/rejected.rst",
            category="2. Column finding",
            subcategory="{experiment}",
            labels={"table": "rejected images"},
        ),
        classes=report(
            f"{RESULTS}/{{experiment}}/classes.csv",
            caption="../report/classes.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"table": "class table"},
        ),
        layers=report(
            f"{RESULTS}/{{experiment}}/layers.csv",
            caption="../report/layers_table.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"table": "layer profiles"},
        ),
        layer_figure=report(
            f"{RESULTS}/{{experiment}}/figures/layers.png",
            caption="../report/layers.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"figure": "layer profile"},
        ),
        overview=report(
            directory(f"{RESULTS}/{{experiment}}/figures/images"),
            patterns=["{name}.png"],
            caption="../report/overview.rst",
            category="2. Column finding",
            subcategory="{experiment}",
            labels={"figure": "{name}"},
        ),
        histograms=report(
            f"{RESULTS}/{{experiment}}/figures/histograms.png",
            caption="../report/histograms.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"figure": "histograms"},
        ),
    params:
        nominal_pm=lambda wc: experiment(wc)["materials"][0]["a_pm"],
        materials=lambda wc: experiment(wc)["materials"],
        stacking_axis=lambda wc: experiment_model(wc).stacking_axis,
        reference_region=lambda wc: experiment(wc).get("strain_reference_region_px"),
        corrections=lambda wc: experiment_model(wc).corrections(),
        settings=analysis_settings,
    log:
        f"{RESULTS}/{{experiment}}/logs/statistics.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/statistics.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/statistics.py"


# Versions read inside the job, in the environment the analysis jobs run in (the
# rule's conda environment on a cluster), and the software the provenance records
# of the statistics name; the statistics are its inputs, so new results remake it.
rule software:
    input:
        statistics=expand(f"{RESULTS}/{{experiment}}/statistics.h5", experiment=EXPERIMENTS),
    output:
        report(
            f"{RESULTS}/software.tsv",
            caption="../report/software.rst",
            category="1. Software",
            labels={"table": "versions"},
        ),
    log:
        f"{RESULTS}/logs/software.log",
    benchmark:
        f"{RESULTS}/benchmarks/software.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    script:
        "../scripts/software.py"
