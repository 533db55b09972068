# Stage 2: find the A and B columns of every image and refine them (Poisson ML).
# Images are analysed in fixed batches (config batch_size): one
# job per batch pays the start-up once, and 10,000 images make 100 jobs.
# A broken image is written as 'rejected' with its reason, never fails the batch.
# A batch folder appears whole (with its batch.json) or not at all; a killed
# batch leaves a hidden .part folder whose finished images the rerun takes over.


rule find_columns:
    input:
        images=batch_images,
    output:
        columns=directory(f"{RESULTS}/{{experiment}}/columns/batch-{{batch}}"),
    params:
        settings=column_settings,
        # checksums recorded at ingest: a modified raw copy is rejected, not analysed
        expected_sha256=batch_checksums,
    log:
        f"{RESULTS}/{{experiment}}/logs/columns/batch-{{batch}}.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/columns/batch-{{batch}}.tsv"
    # images of a batch analysed side by side (capped by --cores; a profile may set it)
    threads: 4
    resources:
        # from the largest image of the batch (manifest sizes; latticegenome.columns.batch.memory_mb)
        mem_mb=batch_memory_mb,
        # minutes: ~12 s per 2048² image per worker, with margin
        runtime=lambda wildcards, input, threads: max(10, 5 + len(input.images) // (5 * threads)),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/find_columns.py"
