# Stage 1: raw images from the facility to scratch, checksummed, with a manifest.
# A checkpoint: the per-image rules are driven by the manifest it writes.
# Incremental: each run takes only the files not yet ingested, as the next
# increment (scratch/<exp>/increments/, never changed afterwards); it runs
# again when the facility's listing changed (listing.json, refreshed when the
# workflow is planned: see refresh_listings in common.smk).


checkpoint ingest:
    input:
        listing=listing_marker,
    output:
        manifest=f"{SCRATCH}/{{experiment}}/manifest.tsv",
        # files not taken (links, unsafe names, changed at the facility), with the reason
        refused=f"{SCRATCH}/{{experiment}}/refused.tsv",
    params:
        facility_name=lambda wc: experiment(wc)["facility"],
        facility=lambda wc: config["facilities"][experiment(wc)["facility"]],
        path=lambda wc: experiment(wc)["path"],
        pattern=lambda wc: experiment_model(wc).pattern,
        raw_dir=lambda wc: f"{SCRATCH}/{wc.experiment}/raw",
    log:
        f"{RESULTS}/{{experiment}}/logs/ingest.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/ingest.tsv"
    conda:
        "../envs/transfer.yaml"
    script:
        "../scripts/ingest.py"
