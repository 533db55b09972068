# Stage 4: a structure model per measured configuration class, DFT on each
# (CP2K here, VASP on HPC) under custodian, results joined with the class table.
# models is a checkpoint: the number of classes is known only after statistics.


checkpoint models:
    input:
        classes=f"{RESULTS}/{{experiment}}/classes.csv",
        layers=f"{RESULTS}/{{experiment}}/layers.csv",
    output:
        models=directory(f"{RESULTS}/{{experiment}}/models"),
    params:
        materials=lambda wc: experiment(wc)["materials"],
        stacking_axis=lambda wc: experiment_model(wc).stacking_axis,
        dft=DFT,
    log:
        f"{RESULTS}/{{experiment}}/logs/models.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/models.tsv"
    conda:
        "../envs/dft.yaml"
    script:
        "../scripts/models.py"


rule dft:
    input:
        model=f"{RESULTS}/{{experiment}}/models/{{model}}.json",
    output:
        result=f"{RESULTS}/{{experiment}}/dft/{{model}}.json",
    params:
        dft=DFT,
        launcher=SETTINGS.mpi_launcher,
        workdir=lambda wc: f"{RESULTS}/{wc.experiment}/dft/{wc.model}",
        # MPI tasks: the profile's resources.tasks on a cluster, else dft.ntasks
        ntasks=lambda wildcards, resources, threads: int(resources.get("tasks") or threads),
    # locally one core per MPI task; cluster profiles set 1 thread per task and resources.tasks
    threads: SETTINGS.dft.ntasks
    resources:
        runtime=120,
        mem_mb=4000,
        # an MPI job: on SLURM the job step is not wrapped in 'srun -n1', and the
        # launcher (mpi_launcher) starts resources.tasks ranks itself
        mpi=SETTINGS.mpi_launcher,
    log:
        f"{RESULTS}/{{experiment}}/logs/dft/{{model}}.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/dft/{{model}}.tsv"
    conda:
        "../envs/dft.yaml"
    script:
        "../scripts/dft.py"


rule dft_table:
    input:
        results=dft_results,
        classes=f"{RESULTS}/{{experiment}}/classes.csv",
        models=models_folder,
    output:
        table=report(
            f"{RESULTS}/{{experiment}}/dft.csv",
            caption="../report/dft.rst",
            category="4. Structure models and DFT",
            subcategory="{experiment}",
            labels={"table": "DFT per class"},
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/dft_table.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/dft_table.tsv"
    conda:
        "../envs/dft.yaml"
    script:
        "../scripts/dft_table.py"
