"""Rule models: a pymatgen model per measured class (+ references, + the superlattice)."""

import json
import shutil
from pathlib import Path

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.fsutil import atomic_write  # noqa: E402
from latticegenome.core.tables import read_table  # noqa: E402
from latticegenome.dft.structures import (
    class_materials,
    class_model,
    image_to_crystal,
    mp_api_key,
    pseudocubic_cell,
    reference_structures,
    superlattice_model,
    write_model,
)

sm = snakemake  # noqa: F821
dft = sm.params.dft
materials = sm.params.materials
refs = reference_structures(materials, cache_path=dft["mp_cache"], api_key=mp_api_key(),
                            log=log.info)
classes = [{k: (v if k == "class" else float(v)) for k, v in r.items()}
           for r in read_table(sm.input.classes)]
layers = read_table(sm.input.layers)
owner = class_materials(classes, layers, materials, sm.params.stacking_axis)
out = Path(sm.output.models)
tmp = out.with_name(out.name + ".tmp")
tmp.mkdir(parents=True, exist_ok=True)
index = []
for mat in materials:
    ref = refs[mat["formula"]]
    s = pseudocubic_cell(ref["structure"], mat["A"], mat["B"])
    name = f"reference_{mat['formula']}"
    write_model(s, tmp, name, {"kind": "reference", "material": mat["formula"],
                               "reference": ref["source"]})
    index.append({"name": name, "kind": "reference", "material": mat["formula"], "run": True})
by_class = {}
for row in classes:
    mat = owner[str(row["class"])]
    m = image_to_crystal(row, sm.params.stacking_axis)
    s = class_model(refs[mat["formula"]]["structure"], a_site=mat["A"], b_site=mat["B"], **m)
    by_class[str(row["class"])] = s
    name = f"class_{row['class']}"
    run = float(row["fraction"]) >= dft.get("min_fraction", 0.01)
    write_model(s, tmp, name, {"kind": "class", "class": row["class"], "material": mat["formula"],
                               "population": int(row["population"]), "fraction": row["fraction"],
                               "measured": {**m, "source": str(sm.input.classes)},
                               "reference": refs[mat["formula"]]["source"]})
    index.append({"name": name, "kind": "class", "class": row["class"],
                  "material": mat["formula"], "run": run})
# The measured layer sequence of the first image, as one stack (written; not run by default).
first = layers[0]["image"] if layers else None
seq = [r for r in layers if r["image"] == first and str(r["majority_class"]) in by_class]
if seq:
    key = "a_pm" if sm.params.stacking_axis == "y" else "b_pm"  # the in-plane image axis
    inplane = sum(float(r[key]) for r in seq) / len(seq)
    stack = superlattice_model([by_class[str(r["majority_class"])] for r in seq],
                               inplane_pm=inplane)
    write_model(stack, tmp, "superlattice", {"kind": "superlattice", "image": first,
                                             "layers": [str(r["majority_class"]) for r in seq]})
    index.append({"name": "superlattice", "kind": "superlattice", "run": False})
with atomic_write(tmp / "index.json", "w") as fh:
    json.dump({"models": index}, fh, indent=1)
if out.exists():
    shutil.rmtree(out)
tmp.rename(out)
log.info("%d models, %d to run", len(index), sum(m["run"] for m in index))
