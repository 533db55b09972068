# Stage 3: lattice statistics, map-reduce. Per batch (map, in parallel): cells
# of its images -> a Parquet cell table, partitioned by experiment and batch,
# and mergeable partials. Per experiment (reduce): merge the partials, keep or
# refit the class model (classes keep their ids), assign classes only in
# batches assigned by another model. A new image costs its own batch's job and
# a merge of partials: nothing that grows with the cells already measured.


rule batch_statistics:
    input:
        columns=f"{RESULTS}/{{experiment}}/columns/batch-{{batch}}",
    output:
        cells=f"{RESULTS}/cells/experiment={{experiment}}/batch={{batch}}/cells.parquet",
        partials=f"{RESULTS}/{{experiment}}/partials/batch-{{batch}}.npz",
    params:
        nominal_pm=lambda wc: experiment(wc)["materials"][0]["a_pm"],
        materials=lambda wc: experiment(wc)["materials"],
        reference_region=lambda wc: experiment(wc).get("strain_reference_region_px"),
        corrections=lambda wc: experiment_model(wc).corrections(),
        settings=analysis_settings,
        seed=SETTINGS.classes.seed,
    log:
        f"{RESULTS}/{{experiment}}/logs/statistics/batch-{{batch}}.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/statistics/batch-{{batch}}.tsv"
    resources:
        mem_mb=1000,
        runtime=15,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/batch_statistics.py"


rule statistics:
    input:
        partials=batch_partials,
        cells=batch_cell_tables,
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
    params:
        batches=lambda wc: [f"{k:05d}" for k in range(len(image_batches(wc)))],
        materials=lambda wc: experiment(wc)["materials"],
        stacking_axis=lambda wc: experiment_model(wc).stacking_axis,
        corrections=lambda wc: experiment_model(wc).corrections(),
        classes=SETTINGS.classes.model_dump(),
    log:
        f"{RESULTS}/{{experiment}}/logs/statistics.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/statistics.tsv"
    # batches whose classes are stale are assigned side by side
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/statistics.py"


rule figures:
    input:
        statistics=f"{RESULTS}/{{experiment}}/statistics.h5",
        columns=column_batches,
        raw=raw_images,
    output:
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
        settings=analysis_settings,
    log:
        f"{RESULTS}/{{experiment}}/logs/figures.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/figures.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/figures.py"


# Versions read inside the job, in the environment the analysis jobs run in (the
# rule's conda environment on a cluster), and the software the provenance records
# of the statistics name; the statistics are its inputs, so new results remake it.
rule software:
    input:
        statistics=expand(f"{RESULTS}/{{experiment}}/statistics.h5", experiment=IMAGE_EXPERIMENTS),
        dynamics=expand(f"{RESULTS}/{{experiment}}/dynamics.tsv", experiment=SERIES_EXPERIMENTS),
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
