"""Experiment-level statistics, streamed over per-image results.

:func:`aggregate` reads the per-image column files one at a time, measures
their cells, appends them to an HDF5 table on disk and keeps only fixed-size
running summaries in memory, so memory does not grow with the number of
images. Rejected images (unreadable, no lattice, no complete cell, lattice
parameters far from the configured materials', names refused at ingest) are
listed with their reason and left out of the statistics. The steps:
:func:`measure_pass` (cells, histograms, a sample of descriptors),
:func:`fit_class_model`, :func:`assignment_pass` (classes and layers), then
the writers; the statistics file's layout belongs to
:mod:`latticegenome.statistics.results` (read it with
:func:`~latticegenome.statistics.results.read_statistics`). Progress goes to
``logging.getLogger(__name__)`` at level INFO.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticegenome.columns.store import read_columns
from latticegenome.core.records import write_sidecar
from latticegenome.core.tables import write_table_csv
from latticegenome.statistics.classes import (
    DESCRIPTORS,
    ClassModel,
    ClassTable,
    Reservoir,
    descriptor_matrix,
    fit_classes,
)
from latticegenome.statistics.layers import (
    LAYER_FIELDS,
    image_layers,
    layer_means,
    name_layers,
)
from latticegenome.statistics.results import (  # noqa: F401 (read_h5_strings: for older callers)
    StatisticsWriter,
    read_h5_strings,
    statistics_writer,
)

logger = logging.getLogger(__name__)

IMAGE_FIELDS = ("image", "n_A", "n_B", "n_cells", "pixel_size_pm", "a_pm", "b_pm",
                "dx_pm", "dy_pm", "intensity_ratio", "dispersion", "mean_x_err_A_pm",
                "mean_x_err_B_pm", "n_O", "zone_axis", "contrast", *(
                    f"check_{k}" for k in ("lattice_ratio", "lattice_angle_deg", "a_over_b",
                                           "unmodelled_peak", "polarity_skewness",
                                           "lattice_coverage", "scan_jitter_px",
                                           "scan_drift_px", "probe_tail_fraction",
                                           "probe_tail_moment_px", "probe_tail_removed")),
                "offset_dx_pm", "offset_dy_pm", "offset_err_pm", "error_scale",
                "calibrated_pixel_size_pm", "calibration_scale_i", "calibration_scale_j",
                "b_over_a")


@dataclass
class Histogram:
    """A fixed-bin histogram that can be filled batch by batch."""

    edges: np.ndarray
    counts: np.ndarray = field(init=False)

    def __post_init__(self):
        self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, float)
        self.counts += np.histogram(v[np.isfinite(v)], self.edges)[0]


class _MaterialReference:
    """The reference cells of a material's layers (a callable for ``corrected_cells``)."""

    def __init__(self, material: str, materials: list[dict], stacking_axis: str):
        self.material, self.materials, self.stacking_axis = material, materials, stacking_axis
        self.describe = f"layers of {material}"

    def __call__(self, cells: dict) -> np.ndarray:
        from latticegenome.statistics.reference import material_mask

        return material_mask(cells, self.material, self.materials, self.stacking_axis)


def measure_image_cells(cols, pixel_size_pm, nominal_pm=None, reference_region_px=None,
                        projection=None, corrections=None):
    """Cells of one image, strained against a region of it or the nominal cell.

    ``corrections`` (``displacement_region``: "all" or a box in px, the
    centrosymmetric reference of the B displacement, with ``displacement_field``
    its offset field: constant, plane, quadratic or auto; ``calibrate_to_pm``
    with ``calibration_region``: the known lattice parameter the pixel size
    and scan anisotropy are fitted to; see
    :func:`latticegenome.statistics.reference.corrected_cells`) are applied
    first; what was applied is returned under the key ``"_applied"``.
    """
    from latticegenome.statistics.reference import corrected_cells

    reference = (nominal_pm, nominal_pm) if nominal_pm else None
    corr = {k: v for k, v in (corrections or {}).items() if v is not None}
    materials, axis = corr.pop("materials", None), corr.pop("stacking_axis", "y")
    if "reference_material" in corr:  # the cells of a centrosymmetric layer
        corr["displacement_region"] = _MaterialReference(corr.pop("reference_material"),
                                                         materials, axis)
    if "calibration_material" in corr:  # the layers of the material calibrated to
        corr["calibration_region"] = _MaterialReference(corr.pop("calibration_material"),
                                                        materials, axis)
    cells, applied = corrected_cells(cols, pixel_size_pm, projection=projection,
                                     reference_pm=reference, strain_region_px=reference_region_px,
                                     **corr)
    cells["_applied"] = applied
    return cells


def lattice_sanity(a_pm: float, b_pm: float, materials: list[dict] | None = None,
                   nominal_pm: float | None = None, tolerance: float | None = 0.15) -> str | None:
    """Why an image's lattice parameters cannot belong to the configured materials.

    A wrong pixel size scales every length of an image: twice the true pixel
    size gives a = 780 pm for SrTiO3, a strain of +100 % and a class of its
    own. Such an image is far outside the lattice parameters of every
    configured material, whereas real strain (a few %) is not.

    Parameters
    ----------
    a_pm, b_pm : float
        The image's median lattice parameters (pm) along ``a`` (closest to
        image x) and ``b``.
    materials : list of dict, optional
        The configured materials: their ``a_pm`` span the expected range
        [min a_pm, max a_pm]; named by ``name`` or ``formula``.
    nominal_pm : float, optional
        The expected lattice parameter (pm) when no material gives one.
    tolerance : float or None
        How far (a fraction of the range's ends) a or b may lie outside the
        range; None: no check.

    Returns
    -------
    str or None
        The reason to reject the image, or None when it is plausible or
        cannot be checked (no tolerance, no materials and no nominal value,
        or no measured value).

    Examples
    --------
    >>> mats = [{"formula": "SrTiO3", "a_pm": 390.5}, {"formula": "BaTiO3", "a_pm": 399.2}]
    >>> print(lattice_sanity(780.2, 781.0, mats))  # doctest: +NORMALIZE_WHITESPACE
    measured a = 780.2 pm, b = 781.0 pm; configured 390.5-399.2 pm (SrTiO3, BaTiO3):
    check the pixel size (tolerance 15 %)
    >>> print(lattice_sanity(429.6, 453.1, mats))  # 10 % strained: plausible
    None
    >>> print(lattice_sanity(195.3, 195.1, None, nominal_pm=390.5))  # doctest: +NORMALIZE_WHITESPACE
    measured a = 195.3 pm, b = 195.1 pm; configured 390.5 pm (nominal):
    check the pixel size (tolerance 15 %)
    >>> print(lattice_sanity(780.2, 781.0, mats, tolerance=None))
    None
    """
    known = [m for m in materials or [] if m.get("a_pm")]
    if known:
        expected = [float(m["a_pm"]) for m in known]
        names = ", ".join(str(m.get("name") or m["formula"]) for m in known)
    elif nominal_pm:
        expected, names = [float(nominal_pm)], "nominal"
    else:
        return None
    measured = np.array([a_pm, b_pm], float)
    if tolerance is None or not np.isfinite(measured).all():
        return None
    lo, hi = min(expected), max(expected)
    if np.all((measured >= lo * (1 - tolerance)) & (measured <= hi * (1 + tolerance))):
        return None
    span = f"{lo:.1f} pm" if lo == hi else f"{lo:.1f}-{hi:.1f} pm"
    return (f"measured a = {a_pm:.1f} pm, b = {b_pm:.1f} pm; configured {span} ({names}): "
            f"check the pixel size (tolerance {tolerance * 100:g} %)")


def _median(values) -> float:
    """Median of the finite values (NaN if none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else np.nan


class _Rejections:
    """The rows of rejected.tsv: file name, reason, source."""

    def __init__(self, extra=()):
        self.rows = {"file": [], "source": [], "reason": []}
        for name, reason in extra:
            self.add(name, reason, source="refused at ingest")
            logger.info("%s: refused at ingest: %s", name, reason)

    def add(self, file: str, reason: str, *, source: str) -> None:
        self.rows["file"].append(file)
        self.rows["source"].append(source)
        self.rows["reason"].append(reason)

    def __len__(self) -> int:
        return len(self.rows["file"])


def _usable_image(path, *, nominal_pm, reference_region_px, materials, lattice_tolerance,
                  corrections=None):
    """One column file's columns and cells, or why it is set aside.

    Returns
    -------
    source : str
        The image file the columns came from.
    result : (cols, attrs, pixel_size_pm, cells), str or None
        The columns, file attributes, pixel size (pm) and measured cells of a
        usable image; or the reason it is left out (rejected when its
        columns were found, no complete cell, lattice parameters far from
        the configured materials: see :func:`lattice_sanity`); or None for
        the 90-degree frame of a scan pair (status ``paired``: analysed with
        its 0-degree partner, whose image it is), skipped with a line in the
        log, neither used nor rejected.
    """
    cols, attrs = read_columns(path)
    source = attrs.get("source", str(path))
    if attrs.get("status") == "paired":
        logger.info("%s: not an image of its own: %s", source, attrs.get("reason", "paired"))
        return source, None
    if attrs.get("status") != "ok":
        return source, attrs.get("reason", "rejected")
    px = float(attrs["pixel_size_pm"])
    try:
        cells = measure_image_cells(cols, px, nominal_pm, reference_region_px,
                                    projection=(attrs.get("info") or {}).get("projection"),
                                    corrections=corrections)
        attrs["applied"] = cells.pop("_applied")
    except ValueError as exc:
        reason = str(exc)
    else:
        reason = lattice_sanity(_median(cells["a_pm"]), _median(cells["b_pm"]), materials,
                                nominal_pm, lattice_tolerance)
    if reason:
        logger.info("%s: set aside: %s", source, reason)
        return source, reason
    return source, (cols, attrs, px, cells)


def _add_image_row(rows: dict, name: str, cols: dict, attrs: dict, px: float, cells: dict) -> None:
    """Append one image's line of images.tsv (medians over its cells; errors in pm)."""
    seen = np.asarray(cols.get("detected", np.ones(len(cols["site"]), bool)), bool)
    is_a, is_b = (cols["site"] == "A") & seen, (cols["site"] == "B") & seen  # detected columns
    info = attrs.get("info") or {}
    check = info.get("check") or {}
    rows["image"].append(name)
    rows["n_A"].append(int(is_a.sum()))
    rows["n_B"].append(int(is_b.sum()))
    rows["n_O"].append(int(((cols["site"] == "O") & seen).sum()))
    rows["zone_axis"].append("[" + "".join(str(v) for v in info.get("zone_axis", [0, 0, 1])) + "]")
    rows["contrast"].append(info.get("contrast", "haadf"))
    for key in IMAGE_FIELDS[IMAGE_FIELDS.index("check_lattice_ratio"):IMAGE_FIELDS.index("offset_dx_pm")]:
        value = check.get(key[len("check_"):])
        rows[key].append(np.nan if value is None else float(value))
    applied = attrs.get("applied") or {}
    ref, calib = applied.get("displacement_reference") or {}, applied.get("calibration") or {}
    rows["offset_dx_pm"].append(ref.get("dx_pm", np.nan))
    rows["offset_dy_pm"].append(ref.get("dy_pm", np.nan))
    rows["offset_err_pm"].append(float(np.hypot(ref["dx_err_pm"], ref["dy_err_pm"])) if ref else np.nan)
    rows["error_scale"].append(ref.get("error_scale", np.nan))
    rows["calibrated_pixel_size_pm"].append(calib.get("calibrated_pixel_size_pm", np.nan))
    rows["calibration_scale_i"].append(calib.get("scale_i", np.nan))
    rows["calibration_scale_j"].append(calib.get("scale_j", np.nan))
    rows["b_over_a"].append(_median(cells["b_pm"]) / _median(cells["a_pm"]))
    rows["n_cells"].append(len(cells["x"]))
    rows["pixel_size_pm"].append(px)
    for field_name in ("a_pm", "b_pm", "dx_pm", "dy_pm", "intensity_ratio"):
        rows[field_name].append(_median(cells[field_name]))
    rows["dispersion"].append(float(attrs.get("dispersion", np.nan)))
    rows["mean_x_err_A_pm"].append(float(np.mean(cols["x_err"][is_a]) * px))
    rows["mean_x_err_B_pm"].append(float(np.mean(cols["x_err"][is_b]) * px) if is_b.any() else np.nan)


def experiment_histograms(nominal_pm: float | None = None) -> dict[str, Histogram]:
    """The experiment's empty histograms: fixed bins, lengths in pm.

    ``a_pm`` and ``b_pm`` span 0.85 to 1.15 times ``nominal_pm`` (400 pm
    without one) in 120 bins; ``dx_pm`` and ``dy_pm`` -40 to 40 pm in 160;
    ``intensity_ratio`` 0 to 1.5 in 150.
    """
    centre = nominal_pm or 400.0
    return {
        "a_pm": Histogram(np.linspace(0.85 * centre, 1.15 * centre, 121)),
        "b_pm": Histogram(np.linspace(0.85 * centre, 1.15 * centre, 121)),
        "dx_pm": Histogram(np.linspace(-40, 40, 161)),
        "dy_pm": Histogram(np.linspace(-40, 40, 161)),
        "intensity_ratio": Histogram(np.linspace(0, 1.5, 151)),
    }


@dataclass
class MeasuredImages:
    """What the measure pass keeps in memory: fixed-size summaries and one row per image.

    Attributes
    ----------
    names : list of str
        File names of the images used; image ``k`` is ``names[k]``.
    spans : list of (int, int)
        (start, count) of each image's cells in the cell table.
    rows : dict of list
        The rows of images.tsv (:data:`IMAGE_FIELDS`).
    histograms : dict of Histogram
    reservoir : Reservoir
        A uniform sample of the cells' descriptors across images.
    """

    histograms: dict
    reservoir: Reservoir
    names: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    rows: dict = field(default_factory=lambda: {k: [] for k in IMAGE_FIELDS})

    def add(self, writer: StatisticsWriter, name: str, cols: dict, attrs: dict, px: float,
            cells: dict) -> None:
        """Append one usable image: its cells to the table, its summaries here."""
        k = len(self.names)
        self.names.append(name)
        self.spans.append(writer.append_cells(cells, k))
        x, ok = descriptor_matrix(cells)
        self.reservoir.add(x[ok], k)
        for field_name, h in self.histograms.items():
            h.add(cells[field_name])
        _add_image_row(self.rows, name, cols, attrs, px, cells)


def measure_pass(results, writer: StatisticsWriter, rejected: _Rejections, *,
                 nominal_pm: float | None = None, reference_region_px=None,
                 materials: list[dict] | None = None, lattice_tolerance: float | None = 0.15,
                 sample_size: int = 20000, seed: int = 0, corrections=None) -> MeasuredImages:
    """First pass: measure the cells of every usable image, one image at a time.

    Each image's cells are appended to ``writer``'s cell table, its
    descriptors offered to a uniform sample of ``sample_size`` rows, its
    values added to the histograms and its summary to images.tsv's rows.
    Unusable images (see :func:`_usable_image`) go to ``rejected``.
    """
    measured = MeasuredImages(experiment_histograms(nominal_pm),
                              Reservoir(sample_size, len(DESCRIPTORS), seed=seed))
    for path in results:
        source, usable = _usable_image(
            Path(path), nominal_pm=nominal_pm, reference_region_px=reference_region_px,
            materials=materials, lattice_tolerance=lattice_tolerance, corrections=corrections)
        if usable is None:  # a scan pair's 90-degree frame: counted with its partner
            continue
        if isinstance(usable, str):
            rejected.add(Path(source).name, usable, source=source)
        else:
            measured.add(writer, Path(source).name, *usable)
    return measured


def fit_class_model(sample: np.ndarray, *, max_classes: int = 8, seed: int = 0) -> ClassModel | None:
    """The class model fitted on a sample of descriptors, or None with too few cells."""
    try:
        model = fit_classes(sample, max_classes=max_classes, seed=seed)
    except ValueError as exc:
        logger.info("no classification: %s", exc)
        return None
    logger.info("%s classes (BIC by number of classes: %s)", model.n_classes, model.bic)
    return model


def assign_classes(model: ClassModel | None, cells: dict) -> tuple[np.ndarray, np.ndarray]:
    """Class of each cell and its probability (-1 and NaN without a model)."""
    if model is None:
        count = len(cells["x"])
        return np.full(count, -1), np.full(count, np.nan)
    return model.assign(*descriptor_matrix(cells))


@dataclass
class LayerRows:
    """Rows of the layer profiles (:data:`~latticegenome.statistics.layers.LAYER_FIELDS`),
    of the interfaces, and the superlattice period of each image that has one."""

    rows: dict = field(default_factory=lambda: {k: [] for k in LAYER_FIELDS})
    interfaces: dict = field(default_factory=lambda: {"image": [], "position_px": [], "plane": []})
    periods: list = field(default_factory=list)

    def add(self, layers: dict | None) -> None:
        """Append one image's result of :func:`~latticegenome.statistics.layers.image_layers`."""
        if layers is None:
            return
        for target, part in ((self.rows, layers["rows"]), (self.interfaces, layers["interfaces"])):
            for name, values in part.items():
                target[name].extend(values)
        if np.isfinite(layers["period_planes"]):
            self.periods.append(layers["period_planes"])


def assignment_pass(writer: StatisticsWriter, measured: MeasuredImages, model: ClassModel | None,
                    *, stacking_axis: str = "y", layer_names=("layer 0", "layer 1"),
                    ) -> tuple[dict, LayerRows]:
    """Second pass: class of every cell, the class table and each image's layers.

    The cells are read back from ``writer``'s table image by image (as
    stored); their classes are written beside them.

    Returns
    -------
    class_table : dict of ndarray
        Empty without a model.
    layers : LayerRows
    """
    writer.start_classes()
    class_table = ClassTable(max(model.n_classes if model else 0, 1))
    layers = LayerRows()
    for name, (start, count) in zip(measured.names, measured.spans):
        cells = writer.read_cells(start, count)
        labels, prob = assign_classes(model, cells)
        writer.write_assignment(start, labels, prob)
        class_table.add(cells, labels)
        layers.add(image_layers(name, cells, labels, stacking_axis=stacking_axis,
                                layer_names=layer_names))
    return (class_table.table() if model is not None else {}), layers


#: Plausibility limits of an image (:func:`plausibility_warnings`).
PLAUSIBLE = {"b_over_a": 0.03, "calibration": 0.05, "dispersion": 3.0, "offset_pm": 2.0,
             "tail_moment_pm": 3.0}


def plausibility_warnings(rows: dict, corrections: dict | None = None,
                          n_materials: int = 1) -> list[str]:
    """What in the images looks like an instrument artefact rather than the sample.

    Per image: b shorter than a by more than 3 % (slow-scan compression: a
    strained film would be longer along the stacking axis, not shorter), or
    longer by more than 3 % in a one-material sample (scan drift, or a
    tetragonal cell), an off-centre probe tail moving each column's centroid by
    3 pm or more and not taken out (``analysis.probe_tail``), a calibration more than
    5 % from the file's pixel size, a dispersion beyond 3 (the image is not in
    detector counts: its errors rest on the dispersion), an instrument offset
    of more than 2 pm and 3 standard errors (subtracted). Per experiment: no
    displacement reference configured (B displacements then include any
    instrument offset). Each warning is one line naming the image(s).
    """
    out = []
    names = rows["image"]

    def flag(key, test, text):
        bad = [(n, v) for n, v in zip(names, rows[key]) if np.isfinite(v) and test(v)]
        if bad:
            shown = ", ".join(f"{n} ({v:.3g})" for n, v in bad[:5]) + (" ..." if len(bad) > 5 else "")
            out.append(f"{len(bad)} image(s) {text}: {shown}")

    flag("b_over_a", lambda v: v < 1 - PLAUSIBLE["b_over_a"],
         "with b more than 3 % shorter than a (slow-scan compression, not tetragonality)")
    if n_materials == 1:
        flag("b_over_a", lambda v: v > 1 + PLAUSIBLE["b_over_a"],
             "with b more than 3 % longer than a (scan drift, or a tetragonal cell)")
    for key in ("calibration_scale_i", "calibration_scale_j"):
        flag(key, lambda v: abs(v - 1) > PLAUSIBLE["calibration"],
             f"whose pixel size is off by more than 5 % ({key})")
    flag("dispersion", lambda v: v > PLAUSIBLE["dispersion"],
         "not in detector counts (dispersion > 3: errors rest on it; a displacement reference "
         "calibrates them)")
    offsets = [(n, dx, dy) for n, dx, dy, err in zip(names, rows["offset_dx_pm"],
                                                      rows["offset_dy_pm"], rows["offset_err_pm"])
               if np.hypot(dx, dy) > max(PLAUSIBLE["offset_pm"], 3 * err)]
    if offsets:  # one line for the experiment, however many images
        shown = ", ".join(f"{n} ({dx:+.1f}, {dy:+.1f})" for n, dx, dy in offsets[:5])
        out.append(f"{len(offsets)} image(s) with an instrument offset (pm) found in the reference "
                   f"and subtracted: {shown}" + (" ..." if len(offsets) > 5 else ""))
    tails = [(n, m * px) for n, m, px, removed in zip(
        names, rows.get("check_probe_tail_moment_px", ()), rows["pixel_size_pm"],
        rows.get("check_probe_tail_removed", ())) if m * px >= PLAUSIBLE["tail_moment_pm"]
        and not removed > 0]
    if tails:
        shown = ", ".join(f"{n} ({m:.1f} pm)" for n, m in tails[:5]) + (" ..." if len(tails) > 5 else "")
        out.append(f"{len(tails)} image(s) with an off-centre probe tail (coma, or a detector lag "
                   "along the fast scan) that moves each column's centroid, not taken out: B "
                   "columns next to bright ones are pulled by a part of it, which no displacement "
                   f"reference cancels; set analysis.probe_tail: correct: {shown}")
    corr = corrections or {}
    if names and not (corr.get("displacement_region") or corr.get("reference_material")):
        out.append("no displacement reference: B displacements include any instrument offset "
                   "(mistilt, probe tails); set displacement_reference_region_px or a "
                   "centrosymmetric material")
    return out


def centrosymmetric_warnings(image_rows: dict, layer_rows: dict,
                             materials: list[dict] | None) -> list[str]:
    """Centrosymmetric materials whose B displacement is not zero after the corrections.

    A material flagged ``centrosymmetric`` cannot be polar: a mean B
    displacement beyond 3 standard errors (and 1 pm) in its layers (the
    planes labelled with its name; the images' medians in a one-material
    experiment) is an instrument artefact left in the results. Standard
    errors from the scatter of the planes (images).
    """
    out = []
    for m in materials or []:
        if not m.get("centrosymmetric"):
            continue
        name = m.get("name") or m.get("formula")
        planes = [k for k, mat in enumerate(layer_rows.get("material", [])) if mat == name]
        if planes:
            where, d = f"its {len(planes)} planes", {
                c: np.asarray(layer_rows[c], float)[planes] for c in ("dx_pm", "dy_pm")}
        elif len(materials) == 1:
            where, d = f"{len(image_rows.get('image', []))} images", {
                c: np.asarray(image_rows.get(c, []), float) for c in ("dx_pm", "dy_pm")}
        else:
            continue
        for c, v in d.items():
            v = v[np.isfinite(v)]
            if v.size < 2:
                continue
            mean, se = float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))
            if abs(mean) > max(1.0, 3 * se):
                out.append(f"{name} is centrosymmetric but its mean B displacement {c[:2]} is "
                           f"{mean:+.1f} +- {se:.1f} pm over {where} after the corrections: an "
                           "instrument offset is left (set or check the displacement reference)")
    return out


def experiment_summary(measured: MeasuredImages, rejected: _Rejections, n_cells: int,
                       n_classes: int, layers: LayerRows, layer_names, warnings=()) -> dict:
    """The summary: images used and rejected, cells, classes, period, per-layer means,
    plausibility warnings."""
    periods = layers.periods
    return {
        "warnings": list(warnings),
        "images_used": len(measured.names),
        "images_rejected": len(rejected),
        "cells": int(n_cells),
        "classes": n_classes,
        "period_planes_mean": float(np.mean(periods)) if periods else None,
        "period_planes_std": float(np.std(periods)) if periods else None,
        "interfaces": len(layers.interfaces["position_px"]),
        "layers": layer_means(layers.rows, layer_names),
    }


def write_tables(images_tsv, rejected_tsv, measured: MeasuredImages, rejected: _Rejections, *,
                 classes_csv=None, class_table: dict | None = None, layers_csv=None,
                 layers: LayerRows | None = None, provenance: dict | None = None) -> None:
    """images.tsv, rejected.tsv and the optional CSV copies of the class table and the
    layer profiles, each with its provenance sidecar (``.prov.json``) when given."""
    write_table_csv(images_tsv, measured.rows, IMAGE_FIELDS, delimiter="\t")
    write_table_csv(rejected_tsv, rejected.rows, ("file", "reason", "source"), delimiter="\t")
    if classes_csv is not None:
        write_table_csv(classes_csv, class_table if class_table else {"class": []})
    if layers_csv is not None:
        write_table_csv(layers_csv, layers.rows)
    if provenance is not None:
        for table in (images_tsv, rejected_tsv, classes_csv, layers_csv):
            if table is not None:
                write_sidecar(table, {**provenance, "output": Path(table).name})


def _warn_log_deprecated(log) -> None:
    if log is not None:
        warnings.warn("aggregate(log=...) is deprecated and ignored: progress goes to the logger "
                      f"{__name__!r}", DeprecationWarning, stacklevel=3)


def aggregate(results: list[str | Path], out_h5: str | Path, images_tsv: str | Path,
              rejected_tsv: str | Path, *, classes_csv: str | Path | None = None,
              layers_csv: str | Path | None = None, nominal_pm: float | None = None,
              stacking_axis: str = "y", materials: list[dict] | None = None,
              reference_region_px: list[float] | None = None, sample_size: int = 20000,
              max_classes: int = 8, seed: int = 0, lattice_tolerance: float | None = 0.15,
              extra_rejected: list[tuple[str, str]] = (), provenance: dict | None = None,
              log=None, corrections: dict | None = None) -> dict:
    """Measure, classify and aggregate the cells of every image of an experiment.

    Two streaming passes over the per-image results, one image in memory at
    a time: :func:`measure_pass`, then the class model fitted on the sample
    (:func:`fit_class_model`), then :func:`assignment_pass`.

    Parameters
    ----------
    results : list of path
        Per-image column files (HDF5), rejected ones included.
    out_h5 : path
        The statistics file (layout: :mod:`latticegenome.statistics.results`).
    images_tsv, rejected_tsv : path
        Per-image summary; rejected images with their reason and source.
    classes_csv, layers_csv : path, optional
        CSV copies of the class table and of the layer profiles.
    nominal_pm : float, optional
        Nominal lattice parameter (pm) of the reference (first) material:
        centres the histograms and is the strain reference.
    stacking_axis : {"y", "x"}
    materials : list of dict, optional
        The experiment's materials, to name the layers (:func:`name_layers`).
    reference_region_px : [x0, y0, x1, y1], optional
        The cells whose centres lie in this box (px) of each image are the
        strain reference of that image, instead of ``nominal_pm``.
    sample_size, max_classes, seed : int
        Cells sampled across all images to fit the class model; the largest
        number of classes compared by BIC; the seed of sample and fit.
    lattice_tolerance : float or None
        Images whose median a or b lies further outside the materials'
        ``a_pm`` range are rejected (:func:`lattice_sanity`); None: no check.
    extra_rejected : list of (str, str)
        Files refused before analysis as (display name, reason): listed with
        the source ``refused at ingest`` and counted in ``images_rejected``.
    provenance : dict, optional
        Provenance record: stored in ``out_h5`` and, with the output's own
        name, beside each CSV/TSV (``.prov.json``).
    corrections : dict, optional
        Instrument corrections of every image (:func:`measure_image_cells`):
        ``displacement_region``, ``calibrate_to_pm``, ``calibration_region``.
    log : None
        Deprecated and ignored (a DeprecationWarning when given): progress
        goes to ``logging.getLogger("latticegenome.statistics.aggregate")``.

    Returns
    -------
    dict
        Summary (:func:`experiment_summary`).
    """
    _warn_log_deprecated(log)
    layer_names = name_layers(materials or [])
    rejected = _Rejections(extra_rejected)
    with statistics_writer(out_h5) as writer:
        measured = measure_pass(results, writer, rejected, nominal_pm=nominal_pm,
                                reference_region_px=reference_region_px, materials=materials,
                                lattice_tolerance=lattice_tolerance, sample_size=sample_size,
                                seed=seed, corrections=corrections)
        writer.write_images(measured.names)
        writer.write_histograms(measured.histograms)
        model = fit_class_model(measured.reservoir.sample, max_classes=max_classes, seed=seed)
        class_table, layers = assignment_pass(writer, measured, model, stacking_axis=stacking_axis,
                                              layer_names=layer_names)
        writer.write_classes(class_table, bic=model.bic if model else None, descriptors=DESCRIPTORS)
        writer.write_rows("layers", layers.rows)
        writer.write_rows("interfaces", layers.interfaces)
        warnings = plausibility_warnings(measured.rows, corrections, len(materials or []) or 1)
        warnings += centrosymmetric_warnings(measured.rows, layers.rows, materials)
        for text in warnings:
            logger.warning("%s", text)
        summary = experiment_summary(measured, rejected, writer.n_cells,
                                     model.n_classes if model else 0, layers, layer_names, warnings)
        writer.write_attributes(summary, None if provenance is None
                                else {**provenance, "output": Path(out_h5).name})
    write_tables(images_tsv, rejected_tsv, measured, rejected, classes_csv=classes_csv,
                 class_table=class_table, layers_csv=layers_csv, layers=layers,
                 provenance=provenance)
    return summary
