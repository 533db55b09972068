# Stage 3, dynamics: an experiment with `series: true` holds image series (one
# stack per file), one with `series: files` one series of one frame per file (in
# the order `series_order` says). Each series is followed column by column
# (registration, tracks, time series: one job per series); the experiment's table
# of series and its figures (summaries, a poster frame, an animation) follow.
# Every cell of every frame gets a configuration class: from the class model of the
# experiment `series_class_model` names (its statistics, classes/model.json), else
# from one fitted on the series' own cells of all frames.


rule track:
    input:
        series=f"{SCRATCH}/{{experiment}}/raw/{{image}}",
        class_model=series_class_model_input,
    output:
        h5=f"{RESULTS}/{{experiment}}/dynamics/{{image}}.h5",
        csv=f"{RESULTS}/{{experiment}}/dynamics/{{image}}.csv",
    params:
        settings=column_settings,
        frames_csv=lambda wc: experiment_model(wc).series_frames_csv,
        max_gap=lambda wc: experiment_model(wc).series_max_gap,
        class_model=series_class_model,
        class_min_probability=series_class_min_probability,
        classes=SETTINGS.classes.model_dump(),
        files=False,
        order=None,
    log:
        f"{RESULTS}/{{experiment}}/logs/track/{{image}}.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/track/{{image}}.tsv"
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/track.py"


# series: files -- the experiment's files are the frames of one series (an image that
# arrives later is a new frame: the series is followed again, whole)
rule track_files:
    input:
        series=raw_images,
        class_model=series_class_model_input,
    output:
        h5=f"{RESULTS}/{{experiment}}/dynamics.h5",
        csv=f"{RESULTS}/{{experiment}}/tracks.csv",
    params:
        settings=column_settings,
        frames_csv=lambda wc: experiment_model(wc).series_frames_csv,
        max_gap=lambda wc: experiment_model(wc).series_max_gap,
        class_model=series_class_model,
        class_min_probability=series_class_min_probability,
        classes=SETTINGS.classes.model_dump(),
        files=True,
        order=lambda wc: experiment_model(wc).series_order,
    log:
        f"{RESULTS}/{{experiment}}/logs/track_files.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/track_files.tsv"
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/track.py"


rule dynamics:
    input:
        series=series_outputs,
    output:
        table=report(
            f"{RESULTS}/{{experiment}}/dynamics.tsv",
            caption="../report/dynamics.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"table": "image series"},
        ),
        figures=report(
            directory(f"{RESULTS}/{{experiment}}/figures/series"),
            patterns=["{name}.{ext}"],
            caption="../report/dynamics_figures.rst",
            category="3. Lattice statistics",
            subcategory="{experiment}",
            labels={"figure": "{name}.{ext}"},
        ),
    params:
        # the raw series of each (series: files, the raw folder: the frames' order is in
        # the dynamics file)
        raw=series_raw,
        settings=column_settings,
    log:
        f"{RESULTS}/{{experiment}}/logs/dynamics.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/dynamics.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/dynamics.py"
