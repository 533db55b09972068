"""Rule dft: one calculation on one model, under custodian (CP2K here, VASP on HPC)."""

import json
from pathlib import Path

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.fsutil import atomic_write  # noqa: E402
from latticegenome.dft.calculations import (
    cp2k_command,
    cp2k_input,
    kpoint_grid,
    run_cp2k,
    run_vasp,
    vasp_command,
    write_vasp_inputs,
)
from latticegenome.dft.structures import read_model  # noqa: E402

sm = snakemake  # noqa: F821
dft = sm.params.dft
structure, meta = read_model(sm.input.model)
work = Path(sm.params.workdir)
work.mkdir(parents=True, exist_ok=True)
engine = dft.get("engine", "cp2k")
ntasks = int(sm.params.ntasks)
grid = kpoint_grid(structure, dft.get("kpoint_density_A", 16))
if engine == "cp2k":
    cp2k_input(structure, cutoff_ry=dft.get("cutoff_ry", 400), max_scf=dft.get("max_scf", 100),
               kpoints=grid).write_file("cp2k.inp", str(work))
    result = run_cp2k(work, cp2k_command(sm.params.launcher, ntasks))
else:
    write_vasp_inputs(structure, work, relax=dft.get("relax", False))
    result = run_vasp(work, vasp_command(sm.params.launcher, ntasks, dft.get("vasp_binary", "vasp_std")))
nfu = structure.composition.get_reduced_composition_and_factor()[1]
result.update(model=meta, engine=engine, kpoints=list(grid), n_atoms=len(structure),
              formula_units=nfu,
              energy_per_fu_eV=result["energy_eV"] / nfu if result.get("energy_eV") else None)
with atomic_write(sm.output.result, "w") as fh:
    json.dump(result, fh, indent=1, default=float)
log.info("%s: %s %s", Path(sm.input.model).stem, result["status"], result.get("reason", ""))
