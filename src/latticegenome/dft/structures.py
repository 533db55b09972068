"""Reference structures (Materials Project with an offline cache) and measured models.

Reference structures
    With ``MP_API_KEY`` set, the reference of each material is the Materials
    Project ground state on the hull (summary search by formula, lowest
    ``energy_above_hull``), stored in a JSON cache with its material id and
    the database version; later runs use the cache. Without a key or network
    the cache or the material's ``structure_file`` is used; with neither,
    :func:`reference_structures` raises before any work. The MP heartbeat has
    no timeout upstream, so reachability is checked first with one.

Models (pymatgen)
    For each measured class: the reference cell strained to the measured
    in-plane and out-of-plane lattice parameters and the B site displaced by
    the measured B displacement (pm -> Angstrom). Image axes map onto crystal
    axes through the experiment's stacking axis: the in-plane image axis is
    crystal ``a`` and the stacking axis is crystal ``c`` (increasing image
    row or column = +c). For a superlattice, a stack of the measured layer
    sequence along ``c``.

The models folder (the ``models`` rule)
    :func:`write_models`: a model per material (its reference), a model per
    class, and the superlattice of the first image's measured layers, each as
    ``name.cif`` and ``name.json``, with ``index.json`` listing them and
    whether each is to be run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from latticegenome.core.errors import ConfigError
from latticegenome.core.fsutil import atomic_dir, atomic_write
from latticegenome.core.tables import read_table

MP_ENDPOINT = "https://api.materialsproject.org/"
PM_PER_ANGSTROM = 100.0
LATTICE_PARAMETER = {"x": "a", "y": "b"}  # image axis -> its lattice parameter (a_pm, b_pm)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- references


def _mp_reachable(endpoint: str, timeout: float) -> bool:
    import requests

    try:
        requests.get(endpoint + "heartbeat", timeout=timeout)
        return True
    except requests.RequestException:
        return False


def fetch_mp_reference(formula: str, api_key: str, *, endpoint: str = MP_ENDPOINT,
                       timeout: float = 20.0) -> dict:
    """The Materials Project ground state of ``formula`` (lowest energy above hull).

    Returns
    -------
    dict
        ``material_id``, ``database_version``, ``energy_above_hull`` (eV/atom),
        ``structure`` (pymatgen dict), ``retrieved_at``, ``source``.
    """
    from mp_api.client import MPRester

    with MPRester(api_key, endpoint=endpoint, use_document_model=False,
                  mute_progress_bars=True) as mpr:
        docs = mpr.materials.summary.search(
            formula=formula, fields=["material_id", "structure", "energy_above_hull"])
        if not docs:
            raise ConfigError(f"the Materials Project has no entry for {formula}")
        best = min(docs, key=lambda d: (d.get("energy_above_hull") or 0.0, str(d["material_id"])))
        version = mpr.get_database_version()
    structure = best["structure"]
    if hasattr(structure, "as_dict"):
        structure = structure.as_dict()
    return {"formula": formula, "material_id": str(best["material_id"]),
            "database_version": version, "energy_above_hull": best.get("energy_above_hull"),
            "structure": structure, "source": "Materials Project",
            "retrieved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def reference_structures(materials: list[dict], *, cache_path: str | Path,
                         api_key: str | None = None, base: str | Path = ".",
                         endpoint: str = MP_ENDPOINT, timeout: float = 20.0) -> dict:
    """The reference structure of each material: Materials Project, cache, or a file.

    What is fetched, and a Materials Project out of reach, is logged (INFO).

    Parameters
    ----------
    materials : list of dict
        The experiment's materials (``formula``, optional ``structure_file``).
    cache_path : path
        JSON cache of Materials Project references (written atomically).
    api_key : str, optional
        ``MP_API_KEY``; without it, no request is made.

    Returns
    -------
    dict
        formula -> {"structure": pymatgen Structure, "source": {...}}.

    Raises
    ------
    ConfigError
        A material with no key/network, no cache entry and no structure file.
    """
    from pymatgen.core import Structure

    cache_path = Path(cache_path)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    online = bool(api_key) and _mp_reachable(endpoint, timeout)
    if api_key and not online:
        log.info("Materials Project not reachable at %s: using the cache or structure files",
                 endpoint)
    out = {}
    for mat in materials:
        formula = mat["formula"]
        entry = cache.get(formula)
        if online and entry is None:
            entry = fetch_mp_reference(formula, api_key, endpoint=endpoint, timeout=timeout)
            cache[formula] = entry
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(cache_path, "w") as fh:
                json.dump(cache, fh, indent=1)
            log.info("%s: %s (Materials Project %s)", formula, entry["material_id"],
                     entry["database_version"])
        if entry is not None:
            out[formula] = {"structure": Structure.from_dict(entry["structure"]),
                            "source": {k: entry.get(k) for k in (
                                "source", "material_id", "database_version", "retrieved_at")}}
            continue
        if mat.get("structure_file"):
            path = Path(mat["structure_file"])
            path = path if path.is_absolute() else Path(base) / path
            try:
                s = Structure.from_file(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the structure of {formula}: {exc}",
                                  str(path)) from None
            out[formula] = {"structure": s, "source": {"source": "file", "path": str(path)}}
            continue
        raise ConfigError(
            f"no reference structure for {formula}: set MP_API_KEY (Materials Project), or add "
            f"structure_file to the material, or provide the cache {cache_path}")
    return out


# --------------------------------------------------------------------------- models


def _site_index(structure, element: str) -> int:
    idx = [i for i, site in enumerate(structure) if site.specie.symbol == element]
    if not idx:
        raise ConfigError(f"the reference structure has no {element} site")
    return idx[0]


def pseudocubic_cell(reference, a_site: str, b_site: str):
    """A 5-atom ABO3 cell with the reference's volume per formula unit.

    MP ground states of perovskites are often tetragonal, orthorhombic or
    rhombohedral supercells; the models start from the ideal cubic cell of the
    same volume per formula unit, so every class model has the same 5-atom
    basis and energies compare directly.
    """
    from pymatgen.core import Lattice, Structure

    nfu = reference.composition.get_reduced_composition_and_factor()[1]
    a = (reference.volume / nfu) ** (1 / 3)
    o = [el.symbol for el in reference.composition.elements if el.symbol not in (a_site, b_site)]
    anion = o[0] if o else "O"
    return Structure(Lattice.cubic(a), [a_site, b_site, anion, anion, anion],
                     [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


def class_model(reference, *, a_site: str, b_site: str, inplane_pm: float, outofplane_pm: float,
                displacement_pm: tuple[float, float]):
    """The reference cell strained to the measured parameters, B displaced.

    Parameters
    ----------
    reference : pymatgen.core.Structure
        The material's reference (reduced to its pseudocubic 5-atom cell).
    inplane_pm, outofplane_pm : float
        Measured lattice parameters (pm) along crystal ``a`` (= ``b``) and ``c``.
    displacement_pm : (float, float)
        Measured B displacement (pm) along crystal ``a`` and ``c``.

    Returns
    -------
    pymatgen.core.Structure
    """
    from pymatgen.core import Lattice, Structure

    cell = pseudocubic_cell(reference, a_site, b_site)
    a, c = inplane_pm / PM_PER_ANGSTROM, outofplane_pm / PM_PER_ANGSTROM
    s = Structure(Lattice.tetragonal(a, c), cell.species, cell.frac_coords)
    ib = _site_index(s, b_site)
    dx, dz = (d / PM_PER_ANGSTROM for d in displacement_pm)
    s.translate_sites([ib], [dx, 0.0, dz], frac_coords=False, to_unit_cell=True)
    return s


def superlattice_model(cells: list, *, inplane_pm: float):
    """Stack 5-atom cells (bottom to top) along ``c`` into one superlattice cell.

    ``cells`` are :func:`class_model` structures in layer order.
    """
    from pymatgen.core import Lattice, Structure

    a = inplane_pm / PM_PER_ANGSTROM
    cs = [float(s.lattice.c) for s in cells]
    total = float(np.sum(cs))
    species, coords, z0 = [], [], 0.0
    for s, c in zip(cells, cs):
        for site in s:
            species.append(site.specie)
            fx, fy, fz = site.frac_coords
            coords.append([fx, fy, (z0 + fz * c) / total])
        z0 += c
    return Structure(Lattice.tetragonal(a, total), species, coords)


def image_axes(stacking_axis: str) -> tuple[str, str]:
    """The image axes ``(in-plane, stacking)``: crystal ``a`` and crystal ``c``.

    Examples
    --------
    >>> image_axes("y")
    ('x', 'y')
    >>> image_axes("x")
    ('y', 'x')
    """
    return ("x", "y") if stacking_axis == "y" else ("y", "x")


def image_to_crystal(row: dict, stacking_axis: str) -> dict:
    """Measured class means in crystal terms: in-plane ``a``, out-of-plane ``c`` (pm).

    Examples
    --------
    >>> row = {"a_pm_mean": 390.5, "b_pm_mean": 412.0, "dx_pm_mean": 0.5, "dy_pm_mean": 12.0}
    >>> image_to_crystal(row, "y")
    {'inplane_pm': 390.5, 'outofplane_pm': 412.0, 'displacement_pm': (0.5, 12.0)}
    >>> image_to_crystal(row, "x")["outofplane_pm"]
    390.5
    """
    inplane, stacking = image_axes(stacking_axis)
    return {"inplane_pm": row[f"{LATTICE_PARAMETER[inplane]}_pm_mean"],
            "outofplane_pm": row[f"{LATTICE_PARAMETER[stacking]}_pm_mean"],
            "displacement_pm": (row[f"d{inplane}_pm_mean"], row[f"d{stacking}_pm_mean"])}


def class_materials(classes: list[dict], layers: list[dict], materials: list[dict],
                    stacking_axis: str) -> dict:
    """Which material each class belongs to.

    The material of the layers whose majority class it is (from the layer
    table, where layers are named after configured materials); a class that
    is no such layer's majority (or whose layers carry no configured
    material's name, e.g. ``layer 0`` when the experiment names fewer
    materials than the image has layers) gets the material whose nominal
    lattice parameter is closest to the class's out-of-plane one.
    """
    from collections import Counter

    by_name = {m.get("name", m["formula"]): m for m in materials}
    by_name.update({m["formula"]: m for m in materials if m["formula"] not in by_name})
    votes: dict[str, Counter] = {}
    for r in layers:
        if r.get("material") in by_name:
            votes.setdefault(str(r["majority_class"]), Counter())[r["material"]] += 1
    out = {}
    for row in classes:
        k = str(row["class"])
        if k in votes:
            out[k] = by_name[votes[k].most_common(1)[0][0]]
        else:
            c = image_to_crystal(row, stacking_axis)["outofplane_pm"]
            out[k] = min(materials, key=lambda m: abs(m["a_pm"] - c))
    return out


def write_model(structure, directory: str | Path, name: str, metadata: dict) -> dict:
    """Write ``name.cif`` and ``name.json`` (structure + what made it); return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cif, js = directory / f"{name}.cif", directory / f"{name}.json"
    from pymatgen.io.cif import CifWriter

    with atomic_write(cif, "w") as fh:
        fh.write(str(CifWriter(structure)))
    with atomic_write(js, "w") as fh:
        json.dump({"name": name, "structure": structure.as_dict(), "latticegenome": metadata},
                  fh, indent=1, default=float)
    return {"cif": str(cif), "json": str(js)}


def read_model(path: str | Path):
    """(structure, metadata) of a model JSON written by :func:`write_model`."""
    from pymatgen.core import Structure

    doc = json.loads(Path(path).read_text())
    return Structure.from_dict(doc["structure"]), doc["latticegenome"]


# --------------------------------------------------------------------------- the models folder


def read_classes(path: str | Path) -> list[dict]:
    """The rows of a class table (``classes.csv``), numbers as float, ``class`` as written."""
    return [{k: (v if k == "class" else float(v)) for k, v in r.items()} for r in read_table(path)]


def _model(name: str, structure, metadata: dict, entry: dict) -> dict:
    """A model: its structure, its record (``name.json``) and its ``index.json`` entry."""
    return {"name": name, "structure": structure, "metadata": metadata,
            "entry": {"name": name, **entry}}


def _reference_model(material: dict, ref: dict) -> dict:
    formula = material["formula"]
    s = pseudocubic_cell(ref["structure"], material["A"], material["B"])
    return _model(f"reference_{formula}", s,
                  {"kind": "reference", "material": formula, "reference": ref["source"]},
                  {"kind": "reference", "material": formula, "run": True})


#: A class is a structure of its own (worth a DFT run) when its mean cell differs from
#: its material's nominal cubic cell by more than this strain along a or b, or its mean
#: B displacement exceeds this many pm; else it is the reference structure within the
#: image's artefacts (scan distortion, calibration, offsets), which the reference model
#: already covers.
DISTINCT = {"strain": 0.01, "displacement_pm": 3.0}


def distinct_from_reference(row: dict, material: dict) -> tuple[bool, str]:
    """Whether a class's mean cell is a structure apart from its material's reference.

    Examples
    --------
    >>> sto = {"formula": "SrTiO3", "a_pm": 390.5}
    >>> distinct_from_reference({"a_pm_mean": 391.0, "b_pm_mean": 390.1, "dx_pm_mean": 0.4,
    ...                          "dy_pm_mean": -0.8}, sto)[0]
    False
    >>> distinct_from_reference({"a_pm_mean": 399.0, "b_pm_mean": 412.0, "dx_pm_mean": 0.0,
    ...                          "dy_pm_mean": 12.0}, sto)
    (True, 'a -> +2.2 %, b -> +5.5 %, |d| = 12.0 pm against SrTiO3 (390.5 pm)')
    """
    a0 = float(material["a_pm"])
    ea = float(row["a_pm_mean"]) / a0 - 1
    eb = float(row["b_pm_mean"]) / a0 - 1
    d = float(np.hypot(float(row.get("dx_pm_mean") or 0), float(row.get("dy_pm_mean") or 0)))
    text = (f"a -> {ea * 100:+.1f} %, b -> {eb * 100:+.1f} %, |d| = {d:.1f} pm against "
            f"{material['formula']} ({a0:g} pm)")
    return (max(abs(ea), abs(eb)) > DISTINCT["strain"] or d > DISTINCT["displacement_pm"]), text


def _class_model(row: dict, material: dict, ref: dict, *, stacking_axis: str,
                 min_fraction: float, source: str) -> dict:
    formula, m = material["formula"], image_to_crystal(row, stacking_axis)
    s = class_model(ref["structure"], a_site=material["A"], b_site=material["B"], **m)
    distinct, why = distinct_from_reference(row, material)
    meta = {"kind": "class", "class": row["class"], "material": formula,
            "population": int(row["population"]), "fraction": row["fraction"],
            "measured": {**m, "source": source}, "reference": ref["source"],
            "distinct_from_reference": distinct, "difference": why}
    return _model(f"class_{row['class']}", s, meta,
                  {"kind": "class", "class": row["class"], "material": formula,
                   "run": float(row["fraction"]) >= min_fraction and distinct})


def _superlattice(layers: list[dict], by_class: dict, stacking_axis: str) -> dict | None:
    """The measured layer sequence of the first image as one stack (not run by default).

    Its in-plane parameter is the layers' mean along the in-plane image axis
    (pm); ``None`` without a layer whose majority class has a model.
    """
    first = layers[0]["image"] if layers else None
    seq = [r for r in layers if r["image"] == first and str(r["majority_class"]) in by_class]
    if not seq:
        return None
    key = f"{LATTICE_PARAMETER[image_axes(stacking_axis)[0]]}_pm"
    inplane = sum(float(r[key]) for r in seq) / len(seq)
    stack = superlattice_model([by_class[str(r["majority_class"])] for r in seq],
                               inplane_pm=inplane)
    return _model("superlattice", stack, {"kind": "superlattice", "image": first,
                                          "layers": [str(r["majority_class"]) for r in seq]},
                  {"kind": "superlattice", "run": False})


def measured_models(refs: dict, classes: list[dict], layers: list[dict], materials: list[dict],
                    *, stacking_axis: str = "y", min_fraction: float = 0.01,
                    source: str = "") -> list[dict]:
    """Every model of an experiment, in the order of the index.

    Parameters
    ----------
    refs : dict
        :func:`reference_structures` of ``materials``.
    classes, layers : list of dict
        The class table (:func:`read_classes`) and the layer table.
    stacking_axis : {"y", "x"}
        The image axis along which the layers stack (crystal ``c``).
    min_fraction : float
        Classes with a smaller fraction of the cells are written, not run.
    source : str
        Where the class means come from (recorded with each class model).

    Returns
    -------
    list of dict
        ``name``, ``structure`` (pymatgen), ``metadata`` (the record written
        with it) and ``entry`` (its ``index.json`` entry: ``name``, ``kind``,
        ``class``/``material`` where they apply, ``run``): the reference of
        each material, each class, then the superlattice if there are layers.
    """
    models = [_reference_model(m, refs[m["formula"]]) for m in materials]
    owner = class_materials(classes, layers, materials, stacking_axis)
    by_class = {}
    for row in classes:
        material = owner[str(row["class"])]
        model = _class_model(row, material, refs[material["formula"]],
                             stacking_axis=stacking_axis, min_fraction=min_fraction,
                             source=source)
        by_class[str(row["class"])] = model["structure"]
        models.append(model)
    stack = _superlattice(layers, by_class, stacking_axis)
    return models + ([stack] if stack else [])


def write_models(classes_csv: str | Path, layers_csv: str | Path, out_dir: str | Path, *,
                 materials: list[dict], mp_cache: str | Path, stacking_axis: str = "y",
                 min_fraction: float = 0.01, api_key: str | None = None) -> list[dict]:
    """The models folder of an experiment (the ``models`` rule); returns its index.

    The references (:func:`reference_structures`, cache ``mp_cache``), then
    :func:`measured_models` from the class and layer tables, each written as
    ``name.cif`` and ``name.json`` (:func:`write_model`) with ``index.json``
    (``{"models": [entry, ...]}``) into ``out_dir``. The folder is made fresh
    beside it (:func:`~latticegenome.core.fsutil.atomic_dir`) and replaces
    ``out_dir`` when whole; a killed run's temporary folder is never reused.

    Returns
    -------
    list of dict
        The index entries (``name``, ``kind``, ..., ``run``).
    """
    refs = reference_structures(materials, cache_path=mp_cache, api_key=api_key)
    models = measured_models(refs, read_classes(classes_csv), read_table(layers_csv), materials,
                             stacking_axis=stacking_axis, min_fraction=min_fraction,
                             source=str(classes_csv))
    out = Path(out_dir)
    shutil.rmtree(out.with_name(out.name + ".tmp"), ignore_errors=True)  # of older versions
    index = [m["entry"] for m in models]
    with atomic_dir(out) as tmp:  # a fresh folder: nothing of a killed run is reused
        for m in models:
            write_model(m["structure"], tmp, m["name"], m["metadata"])
        with atomic_write(tmp / "index.json", "w") as fh:
            json.dump({"models": index}, fh, indent=1)
    return index


def mp_api_key() -> str | None:
    """``MP_API_KEY`` from the environment (never from files in the repository)."""
    return os.environ.get("MP_API_KEY") or None


__all__ = ["class_materials", "class_model", "fetch_mp_reference", "image_axes",
           "image_to_crystal", "measured_models", "mp_api_key", "pseudocubic_cell",
           "read_classes", "read_model", "reference_structures", "superlattice_model",
           "write_model", "write_models"]
