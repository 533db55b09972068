"""Rule models: a pymatgen model per measured class (+ references, + the superlattice)."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.dft.structures import mp_api_key, write_models  # noqa: E402

sm = snakemake  # noqa: F821
index = write_models(sm.input.classes, sm.input.layers, sm.output.models,
                     materials=sm.params.materials, stacking_axis=sm.params.stacking_axis,
                     mp_cache=sm.params.dft["mp_cache"],
                     min_fraction=sm.params.dft.get("min_fraction", 0.01), api_key=mp_api_key())
log.info("%d models, %d to run", len(index), sum(m["run"] for m in index))
