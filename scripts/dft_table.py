"""Rule dft_table: DFT results joined with the class population and measured numbers."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.tables import read_table, write_table_csv  # noqa: E402
from latticegenome.dft.calculations import dft_table  # noqa: E402

sm = snakemake  # noqa: F821
table = dft_table(list(sm.input.results), read_table(sm.input.classes), models=sm.input.models)
write_table_csv(sm.output.table, table)
log.info("%d rows", len(table["class"]))
