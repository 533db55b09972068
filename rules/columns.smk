# Stage 2: per image, find the A and B columns and refine them (Poisson ML).
# A broken image is written as 'rejected' with its reason, never fails the run.


rule find_columns:
    input:
        image=f"{SCRATCH}/{{experiment}}/raw/{{image}}",
    output:
        columns=f"{RESULTS}/{{experiment}}/columns/{{image}}.h5",
    params:
        settings=analysis_settings,
    log:
        f"{RESULTS}/{{experiment}}/logs/columns/{{image}}.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/columns/{{image}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/find_columns.py"
