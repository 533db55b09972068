# latticegenome: STEM images of perovskite superlattices -> a library of local
# lattice configurations. Stages are in rules/, thin scripts in scripts/, the
# library that does the work in src/latticegenome/.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"


check_references(config)

if workflow.is_main_process:
    refresh_listings()


onstart:
    globus_preflight()
    report_facility_changes()


report: "report/workflow.rst"


include: "rules/ingest.smk"
include: "rules/columns.smk"
include: "rules/statistics.smk"
include: "rules/dynamics.smk"
include: "rules/dft.smk"
include: "rules/publish.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
