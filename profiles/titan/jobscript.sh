#!/bin/bash
# properties = {properties}
#
# The job script of every Titan batch job (Snakemake's cluster-generic executor;
# `jobscript: jobscript.sh` in profiles/titan/config.yaml). Snakemake fills in the
# job's properties and its command; doubled braces are single ones in the script.
#
# PBS runs this script on a service (MOM) node that all jobs share; only what aprun
# launches runs on the job's compute node. So the job's Snakemake command runs
# - on the compute node, `aprun -n 1 -N 1 -d <threads>` (one process, <threads>
#   cores), for every job: find_columns, statistics, dft_table, package, ...;
# - here, on the service node, for a job whose rule starts its own MPI ranks with
#   aprun (resources.mpi: the dft rule runs `aprun -n <tasks> vasp_std`; aprun
#   cannot be nested), and for a job the profile marks `service_node: 1` (ingest,
#   models and publish: they wait on Globus or the Materials Project, over the
#   network).
set -u
cd "${{PBS_O_WORKDIR:-.}}" || exit 1   # Torque starts the script in $HOME

LG_PROPERTIES=$(cat <<'LG_END_OF_PROPERTIES'
{properties}
LG_END_OF_PROPERTIES
)
LG_JOB=$(cat <<'LG_END_OF_JOB'
{exec_job}
LG_END_OF_JOB
)

# the job's resources, e.g. "mem_mb": 2000, "mpi": "aprun", "service_node": 1
LG_RESOURCES=$(printf '%s\n' "$LG_PROPERTIES" | sed -n 's/.*"resources": {{\([^}}]*\)}}.*/\1/p')
LG_THREADS=$(printf '%s\n' "$LG_PROPERTIES" | sed -n 's/.*"threads": \([0-9][0-9]*\), "resources": .*/\1/p')

case "$LG_RESOURCES" in
    *'"mpi": '* | *'"service_node": 1'*)
        exec /bin/bash -c "$LG_JOB" ;;
esac
exec aprun -n 1 -N 1 -d "${{LG_THREADS:-1}}" /bin/bash -c "$LG_JOB"
