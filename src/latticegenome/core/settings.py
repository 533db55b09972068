"""Every setting of the workflow, once: its type, range, default and meaning.

The configuration (``config/config.yaml``) is one typed model, :class:`Settings`.
Everything else is made from it:

- ``config/schema.yaml``, which ``snakemake.utils.validate`` (the Snakefile) and
  :func:`latticegenome.core.config.validate_config` (``check-config``) check a
  configuration with, and which fills in the defaults, is written by
  :func:`schema_yaml` (``latticegenome settings-schema``); a test fails when the
  committed file differs from it;
- the options of ``latticegenome columns``, ``cells`` and ``classify`` are made
  from the fields of :class:`AnalysisSettings`, :class:`Material` and
  :class:`Experiment` (names, types, ranges, defaults, help);
- :func:`latticegenome.columns.analysis.analyse_file` and the workflow's batches
  take an :class:`AnalysisSettings` (the ``analysis:`` block merged with an
  experiment's overrides: :meth:`Settings.analysis_for`).

Adding a setting is one field here (with its default, range and description),
then its use.

Numbers are finite (NaN and infinities are refused), booleans are not numbers
and text is not a number: the same as the JSON schema.
"""

import copy
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Optional

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict,
                      create_model, model_validator)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import to_jsonable_python

#: A finite number (an integer or a float in YAML).
Real = Annotated[float, Strict()]
#: An integer (not a boolean, not text).
Integer = Annotated[int, Strict()]
#: True or false (not 0/1, not text).
Flag = Annotated[bool, Strict()]

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ORCID_PATTERN = "^(https://orcid.org/)?[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]$"
EXPERIMENT_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ExperimentName = Annotated[str, Field(pattern=EXPERIMENT_NAME_PATTERN)]

#: A pixel size in pm, as the workflow and the command line accept it.
PixelSizePm = Annotated[Real, Field(ge=0.5, le=2000)]
#: A lattice parameter (A-A spacing) in pm.
LatticePm = Annotated[Real, Field(ge=100, le=2000)]

#: Zone axes the column finder knows the projected motif of, by family (cubic perovskite).
ZONE_AXIS_FAMILIES = {"001": (0, 0, 1), "110": (1, 1, 0)}


def zone_axis_family(axis) -> str:
    """``"001"`` or ``"110"``: the family of a zone axis given as three integers.

    Examples
    --------
    >>> zone_axis_family([0, 1, 0]), zone_axis_family([1, -1, 0])
    ('001', '110')
    """
    key = tuple(sorted(abs(int(v)) for v in axis))
    for name, ref in ZONE_AXIS_FAMILIES.items():
        if key == tuple(sorted(ref)):
            return name
    raise ValueError(f"zone axis {list(axis)} is not supported: the column finder knows the "
                     f"<001> and <110> projections of a perovskite (e.g. [0, 0, 1], [1, 1, 0])")


def _zone_axis_from_text(value):
    """``"110"``, ``"1-10"``, ``"1,1,0"`` (the command line's forms) as three integers."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        parts = re.findall(r"-?\d+", text) if ("," in text or " " in text) else \
            re.findall(r"-?\d", text)
        if "".join(parts).replace("-", "") != re.sub(r"[\s,\-]", "", text) or len(parts) != 3:
            raise ValueError(f"zone axis {value!r}: give three integers, e.g. 001 or 110")
        return [int(p) for p in parts]
    return value


def _supported_zone_axis(value: list[int]) -> list[int]:
    zone_axis_family(value)
    return value


#: A zone axis: three integers [u, v, w] of the <001> or <110> family.
ZoneAxis = Annotated[list[Integer], BeforeValidator(_zone_axis_from_text),
                     Field(min_length=3, max_length=3), AfterValidator(_supported_zone_axis)]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Section(BaseModel):
    """A block of the configuration: unknown keys and non-finite numbers refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


# --------------------------------------------------------------------------- analysis


def _quarter_turns(value: int) -> int:
    if value % 4 == 2:
        raise ValueError("rot90 must be 0, 1 or 3 (-1) quarter turns: a frame turned by 180 "
                         "degrees keeps its scan lines as rows")
    return value


class ScanPair(_Section):
    """Frame pairs recorded with orthogonal fast-scan directions (0 and 90 degrees).

    An image whose file stem ends with ``suffix_90`` is the 90-degree partner
    of the file in the same folder whose stem ends with ``suffix_0`` instead
    (same extension): ``field_0.tif`` and ``field_90.tif``. The 0-degree file
    is analysed with its partner, the scan distortion corrected first
    (:func:`latticegenome.columns.scanpair.correct_orthogonal_pair`); the
    90-degree file is not analysed on its own.

    Examples
    --------
    >>> ScanPair().suffix_90
    '_90'
    """

    suffix_0: str = Field(
        "_0", min_length=1,
        description="file stem ending of the 0-degree frame (fast scan along x)")
    suffix_90: str = Field(
        "_90", min_length=1,
        description="file stem ending of its 90-degree partner (fast scan along y); the rest "
                    "of the name and the extension are the same")
    rot90: Annotated[Integer, Field(ge=-1, le=3), AfterValidator(_quarter_turns)] = Field(
        0, description="quarter turns np.rot90(frame, k) that show the 90-degree frame as "
                       "stored the way the 0-degree frame shows the field: 0 when the file is "
                       "stored in that orientation already, 1 or 3 (-1) when it holds the "
                       "frame as scanned (its rows are its scan lines)",
        json_schema_extra={"not": {"const": 2}})

    @model_validator(mode="after")
    def _distinct(self):
        if self.suffix_0 == self.suffix_90:
            raise ValueError(f"suffix_0 and suffix_90 must differ (both {self.suffix_0!r})")
        return self


class AnalysisSettings(_Section):
    """How one image is analysed.

    The ``analysis:`` block of the configuration holds these settings (except
    :attr:`FROM_EXPERIMENT`) for every experiment; an experiment's own
    ``analysis:`` overrides any of them, and its ``pixel_size_pm`` and
    ``hdf5_dataset`` say how its files are read. :meth:`Settings.analysis_for`
    merges them.

    Examples
    --------
    >>> AnalysisSettings().significance
    5.0
    >>> AnalysisSettings(significance=6, pixel_size_pm=20.0).for_columns()["significance"]
    6.0
    """

    significance: Real = Field(
        5.0, gt=0,
        description="keep a column when its amplitude is at least this many standard errors")
    b_search: Real = Field(
        0.3, gt=0, le=0.5,
        description="look for B within this fraction of the A-A spacing of the cell centre")
    stack: Literal["sum", "align"] = Field(
        "sum", description="3-D files: sum the frames, or align (register, then sum)")
    spacing_pm: LatticePm | None = Field(
        None, description="A-A spacing in pm, a hint for the lattice search; default the "
                          "first material's a_pm")
    lattice_tolerance: Real = Field(
        0.15, gt=0, le=1,
        description="an image whose median measured lattice parameter a or b lies further than "
                    "this fraction outside the configured materials' a_pm range is rejected "
                    "(e.g. a wrong pixel size)")
    zone_axis: ZoneAxis = Field(
        [0, 0, 1], description="zone axis of the images, [u, v, w] of the perovskite: [0, 0, 1] "
                               "(A at the corners, B at the centre) or [1, 1, 0] (A, B and O "
                               "columns on a rectangular a x a*sqrt(2) cell)")
    contrast: Literal["haadf", "abf"] = Field(
        "haadf", description="haadf: columns bright (Z-contrast); abf: columns dark on a bright "
                             "background (annular bright field), fitted as dips")
    oxygen: Literal["auto", "fit", "skip"] = Field(
        "auto", description="fit the O columns too and report the visible ones: auto (abf "
                            "contrast, and haadf where the projection's O columns are expected "
                            "at a fifth of the B brightness or more: [110]), fit, or skip")
    signal: str | None = Field(
        None, description="files with several images (EMD, DM): the title of the one to analyse; "
                          "default the HAADF/ADF image, chosen by its metadata")
    pixel_size_pm: PixelSizePm | None = Field(
        None, description="pixel size in pm, used for files that carry none")
    hdf5_dataset: str | None = Field(
        None, description="dataset path of the image inside HDF5 files")
    cations: list[list[str]] | None = Field(
        None, description="A and B species of each material, [[A, B], ...]: which projected "
                          "columns are brightest (from the experiment's materials); default "
                          "SrTiO3")
    probe_tail: Literal["off", "detect", "correct"] = Field(
        "detect", description="the probe's tail (aberrations, source spread: light around each "
                              "column that pulls its faint neighbours): detect estimates it on "
                              "each image and reports it (images.tsv check_probe_tail_*, a "
                              "warning when it is large); correct also takes its light out of "
                              "the image before the final fit; off skips it")
    column_width: Literal["auto", "free"] = Field(
        "auto", description="the columns' Gaussian widths: auto fits them again with one width "
                            "per sublattice where their fitted widths agree within twice their "
                            "errors (low dose: a free width lets a faint column widen and its "
                            "position wander beyond its error); free keeps each column's own "
                            "(e.g. to compare column intensities of different widths)")
    scan_pair: ScanPair | None = Field(
        None, description="frame pairs recorded with orthogonal fast scans, by file name: each "
                          "0-degree image is analysed with its 90-degree partner from the same "
                          "folder, the scan distortion corrected first; the partner gets status "
                          "paired, not analysed on its own; default none (each file alone)")

    #: Set per experiment (``experiments.<name>.pixel_size_pm``), not in ``analysis:``.
    FROM_EXPERIMENT: ClassVar[tuple[str, ...]] = ("pixel_size_pm", "hdf5_dataset", "cations")
    #: Not command-line options (the command line has no materials; frame pairs:
    #: ``latticegenome descan``).
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ("cations", "scan_pair")
    #: Used by the statistics, not by the column finding (changing them does not
    #: find the columns again).
    STATISTICS_ONLY: ClassVar[tuple[str, ...]] = ("lattice_tolerance",)

    @classmethod
    def of(cls, settings: "AnalysisSettings | Mapping | None" = None, **overrides) -> "AnalysisSettings":
        """``settings`` as an :class:`AnalysisSettings`, with ``overrides`` (field names).

        Parameters
        ----------
        settings : AnalysisSettings, mapping or None
            An instance (returned as it is when there are no overrides), a
            plain dict of settings (checked by the model: an unknown key or a
            value out of range raises), or None for the defaults.
        **overrides
            Fields to replace.

        Raises
        ------
        pydantic.ValidationError
            Naming the field and the problem.
        """
        if isinstance(settings, AnalysisSettings):
            if not overrides:
                return settings
            return type(settings).model_validate({**settings.model_dump(), **overrides})
        return cls.model_validate({**dict(settings or {}), **overrides})

    @classmethod
    def column_fields(cls) -> list[str]:
        """Names of the fields the column finding uses (all but :attr:`STATISTICS_ONLY`)."""
        return [n for n in cls.model_fields if n not in cls.STATISTICS_ONLY]

    def for_columns(self) -> dict:
        """The settings the column finding uses, as a plain dict (rule parameters,
        provenance records)."""
        return self.model_dump(include=set(self.column_fields()))


def _derived(name: str, base: type[BaseModel], *, exclude=(), optional: bool = False,
             doc: str = "") -> type[_Section]:
    """A model with the fields of ``base`` (less ``exclude``): the same types,
    ranges and descriptions; with ``optional``, every field optional and
    without a default (an override of the field when given)."""
    fields = {}
    for field, info in base.model_fields.items():
        if field in exclude:
            continue
        if optional:
            info = copy.copy(info)
            info.default = None
            fields[field] = (Optional[info.annotation], info)
        else:
            fields[field] = (info.annotation, info)
    return create_model(name, __base__=_Section, __doc__=doc, __module__=__name__, **fields)


AnalysisBlock = _derived(
    "AnalysisBlock", AnalysisSettings, exclude=AnalysisSettings.FROM_EXPERIMENT,
    doc="Analysis defaults for every experiment (an experiment may override any).")
AnalysisOverrides = _derived(
    "AnalysisOverrides", AnalysisSettings, exclude=AnalysisSettings.FROM_EXPERIMENT, optional=True,
    doc="An experiment's own analysis settings: each replaces the one of the analysis block.")


# --------------------------------------------------------------------------- facilities


def _backend_rules(schema: dict, cls) -> None:
    """The schema's form of :meth:`Facility._backend_needs` (if/then per backend)."""
    rules = []
    default = cls.model_fields["backend"].default
    for backend, needs in cls.NEEDS.items():
        condition = {"properties": {"backend": {"const": backend}}}
        if backend != default:  # an absent backend is the default one
            condition["required"] = ["backend"]
        rules.append({"if": condition, "then": {"required": list(needs)}})
    schema["allOf"] = rules


class Facility(_Section):
    """A source of raw images or a destination of results."""

    model_config = ConfigDict(json_schema_extra=_backend_rules)

    backend: Literal["local", "globus"] = Field(
        "local", description="local: a folder on a local or mounted file system; globus: a "
                             "Globus collection")
    path: str | None = Field(
        None, description="base folder (local backend) or base path on the collection (globus)")
    collection_id: str | None = Field(
        None, pattern=UUID_PATTERN, description="Globus collection UUID (globus backend)")
    local_path: str | None = Field(
        None, description="globus backend, host facility only: the folder on this machine's "
                          "file system that the collection shows at `path` (scratch and "
                          "results must lie below it)")
    data_access: Flag = Field(
        True, description="globus backend: request data_access consent for this collection "
                          "(mapped, non High Assurance Globus Connect Server collections); "
                          "false for guest collections")
    description: str | None = Field(None, description="what the facility is")

    #: What each backend needs besides ``backend``.
    NEEDS: ClassVar[dict[str, tuple[str, ...]]] = {"local": ("path",),
                                                   "globus": ("collection_id", "path")}

    @model_validator(mode="after")
    def _backend_needs(self):
        for need in self.NEEDS[self.backend]:
            if getattr(self, need) is None:
                raise ValueError(f"'{need}' is a required property (backend {self.backend})")
        return self


# --------------------------------------------------------------------------- sections


class DftSettings(_Section):
    """Structure models from the measured classes, and DFT on them."""

    enabled: Flag = Field(True, description="make structure models and run DFT on them")
    engine: Literal["cp2k", "vasp"] = Field(
        "cp2k", description="cp2k (local, Debian's cp2k) or vasp (HPC; set by the machine "
                            "profiles)")
    min_fraction: Real = Field(
        0.01, ge=0, le=1,
        description="classes holding less than this fraction of the cells get a model but no DFT")
    mp_cache: str = Field(
        "resources/materials_project.json",
        description="cache of Materials Project reference structures (material id, database "
                    "version)")
    cutoff_ry: Real = Field(400, gt=0, description="CP2K: plane-wave cutoff in Ry")
    kpoint_density_A: Real = Field(
        16, gt=0, description="k-point density: k-points times lattice parameter in Å, per axis")
    max_scf: Integer = Field(100, ge=1, description="CP2K: most SCF iterations")
    ntasks: Integer = Field(2, ge=1, description="MPI tasks per calculation")
    relax: Flag = Field(False, description="VASP: relax (MPRelaxSet) instead of static")
    vasp_binary: str = Field("vasp_std", description="VASP: the executable the launcher starts")


class GlobusSettings(_Section):
    """Globus settings, used when a facility has backend globus.

    Examples
    --------
    >>> GlobusSettings.from_config({"poll_seconds": 5}).wait_hours
    12.0
    """

    host: str | None = Field(
        None, description="the facility (backend globus, with local_path) this workflow runs on")
    auth: Literal["user", "client"] = Field(
        "user", description="user: a person's tokens from `latticegenome login`; client: a "
                            "confidential client from LATTICEGENOME_GLOBUS_CLIENT_ID / "
                            "LATTICEGENOME_GLOBUS_CLIENT_SECRET (unattended)")
    native_client_id: str | None = Field(
        None, description="client id of the native app people log in with (`latticegenome login`)")
    poll_seconds: Integer = Field(15, ge=1, description="seconds between task status polls")
    wait_hours: Real = Field(
        12.0, gt=0, description="how long one job waits for a task (the task goes on; a rerun "
                                "resumes waiting for it)")
    deadline_hours: Real = Field(24.0, gt=0, description="Globus stops retrying faults after this")
    max_faults: Integer = Field(
        50, ge=0, description="stop waiting once a task has had more faults than this")

    @classmethod
    def from_config(cls, block: Mapping | None) -> "GlobusSettings":
        """The ``globus:`` block of a configuration (None: the defaults)."""
        return cls.model_validate(dict(block or {}))


class Publication(_Section):
    """Where each experiment's package goes: ``<facility>:<path>/<experiment>``."""

    facility: str = Field(description="name of a facility above (backend local or globus)")
    path: str = Field("latticegenome", description="folder at the facility")
    license: str = Field("https://creativecommons.org/licenses/by/4.0/",
                         description="license of the published packages (RO-Crate)")


class Person(_Section):
    """A person named in the RO-Crate."""

    name: str
    affiliation: str | None = None
    orcid: str | None = Field(None, pattern=ORCID_PATTERN)
    email: str | None = None


class Material(_Section):
    """A material of an experiment's sample (the first is the strain reference)."""

    name: str | None = Field(None, description="a name for the layer profiles")
    formula: str = Field(description="chemical formula")
    A: str = Field(description="A-site species")
    B: str = Field(description="B-site species")
    a_pm: LatticePm = Field(description="nominal lattice parameter in pm")
    structure_file: str | None = Field(
        None, description="reference structure (CIF, POSCAR, pymatgen JSON) used when the "
                          "Materials Project (MP_API_KEY) and its cache have none")
    centrosymmetric: Flag = Field(
        False, description="the material has no polar displacement (e.g. a SrTiO3 substrate): "
                           "when every material of an experiment is, each whole image is the "
                           "reference of zero B displacement (the instrument offset)")


class Experiment(_Section):
    """One experiment: a folder of raw images at a facility, and its sample."""

    description: str | None = Field(None, description="what was measured")
    facility: str = Field(description="name of a facility above")
    path: str = Field(description="folder of the raw images at the facility")
    pattern: str = Field("*", description="glob of the image files in that folder")
    pixel_size_pm: PixelSizePm | None = Field(
        None, description=AnalysisSettings.model_fields["pixel_size_pm"].description)
    hdf5_dataset: str | None = Field(
        None, description=AnalysisSettings.model_fields["hdf5_dataset"].description)
    stacking_axis: Literal["x", "y"] = Field(
        "y", description="image axis along which the layers are stacked")
    instrument: dict[str, str | Real] | None = Field(
        None, description="microscope and facility, recorded in the RO-Crate")
    strain_reference_region_px: list[Real] | None = Field(
        None, min_length=4, max_length=4,
        description="[x0, y0, x1, y1] in pixels: the cells inside this box of each image define "
                    "the strain reference (e.g. the substrate); default the first material's a_pm")
    materials: list[Material] = Field(min_length=1, description="the materials of the sample")
    displacement_reference_region_px: list[Real] | None = Field(
        None, min_length=4, max_length=4,
        description="[x0, y0, x1, y1] in pixels: the cells inside this box of each image "
                    "(a centrosymmetric region, e.g. the substrate) give the instrument offset "
                    "of the B displacement, subtracted from every cell, and the scatter the "
                    "errors are calibrated to")
    displacement_reference_field: Literal["constant", "plane", "quadratic", "auto"] = Field(
        "constant",
        description="the instrument offset across each image, fitted to the displacement "
                    "reference's cells: one constant vector (their mean), a plane in the cell "
                    "centres (c0 + c1 x + c2 y: a mistilt or scan distortion that varies across "
                    "the field of view), a quadratic (adds x^2, xy, y^2), or auto (the lowest "
                    "BIC of those the cells are enough for); a field is weighted by the "
                    "reported errors and never evaluated more than 25 % beyond the reference "
                    "cells' box")
    calibrate_to: str | None = Field(
        None, description="name or formula of a material of the experiment whose a_pm the pixel "
                          "size and scan anisotropy are fitted to (in the displacement reference "
                          "region when given, else in that material's layers, else over the "
                          "whole image of a one-material sample)")
    analysis: AnalysisOverrides | None = Field(
        None, description="this experiment's own analysis settings (override the analysis block)")
    series: Flag | Literal["files"] = Field(
        False, description="image series (in-situ heating, dose-fractionated): true, each file "
                           "is a stack of frames of one field of view; files, the experiment's "
                           "files are the frames of one series, in the order series_order "
                           "says. Its columns are followed frame by frame (registration, "
                           "tracks, time series: results/<exp>/dynamics/, or "
                           "results/<exp>/dynamics.h5 for files), instead of the per-image "
                           "statistics, classes and DFT")
    series_order: Literal["number", "name", "time"] = Field(
        "number", description="series: files, the order of the frames: number, the numbers in "
                              "the file name (frame_9 before frame_10); name, the name as text; "
                              "time, the acquisition time in the files' metadata (a file "
                              "without one is refused)")
    series_max_gap: int = Field(
        1, ge=0, le=100,
        description="series: a column not found in up to this many frames in a row (a low-dose "
                    "frame, noise) keeps its track; one missing for longer ends it, and a "
                    "column found later at that site starts a new one (0: every miss ends a "
                    "track)")
    series_frames_csv: str | None = Field(
        None, description="per-frame metadata of the series (frame, time_s, temperature_K, "
                          "dose_e_per_A2; one row per frame), a file relative to the workflow "
                          "folder; its fields win, the others come from the frames' metadata "
                          "(acquisition time; beam current x dwell time for the dose), else "
                          "the frame number is the time")
    series_class_model: ExperimentName | None = Field(
        None, description="series: the experiment (a non-series one of this config) whose class "
                          "model (results/<exp>/classes/model.json) classifies every cell of "
                          "every frame; default a model fitted on the series' own cells of all "
                          "frames")
    series_class_min_probability: float = Field(
        0.9, gt=0, le=1, description="series: a cell whose class probability is under this "
                                     "is unknown (class -1), not a guess")

    def corrections(self) -> dict:
        """The instrument corrections of this experiment's statistics
        (:func:`latticegenome.statistics.aggregate.measure_image_cells`): the
        displacement reference (the configured region; else the whole image when
        every material is centrosymmetric, the layers of the first centrosymmetric
        one when some are; else none), its offset field (``displacement_field``) and
        the calibration.

        Raises
        ------
        ValueError
            ``calibrate_to`` names no material of the experiment.
        """
        region = self.displacement_reference_region_px
        central = [m for m in self.materials if m.centrosymmetric]
        by_layer = {}
        if region is None and central and len(central) == len(self.materials):
            region = "all"
        elif region is None and central:  # the cells of its layers
            by_layer = {"reference_material": central[0].name or central[0].formula,
                        "materials": [m.model_dump(include={"name", "formula", "A"})
                                      for m in self.materials],
                        "stacking_axis": self.stacking_axis}
        calibrate = None
        if self.calibrate_to is not None:
            match = [m for m in self.materials if self.calibrate_to in (m.name, m.formula)]
            if not match:
                raise ValueError(f"calibrate_to {self.calibrate_to!r} is not a material of the "
                                 f"experiment ({', '.join(m.name or m.formula for m in self.materials)})")
            calibrate = match[0].a_pm
            if self.displacement_reference_region_px is None and len(self.materials) > 1:
                # only that material's layers: a superlattice's other layers have another b
                by_layer["calibration_material"] = match[0].name or match[0].formula
                by_layer.setdefault("materials", [m.model_dump(include={"name", "formula", "A"})
                                                  for m in self.materials])
                by_layer.setdefault("stacking_axis", self.stacking_axis)
        return {"displacement_region": region, "calibrate_to_pm": calibrate,
                "calibration_region": self.displacement_reference_region_px or "all",
                "displacement_field": self.displacement_reference_field, **by_layer}



class ClassSettings(_Section):
    """How the classes of local configurations are fitted and kept stable.

    Examples
    --------
    >>> ClassSettings().refit_growth
    2.0
    """

    max_classes: Integer = Field(8, ge=1, le=50,
                                 description="mixtures of 1 .. max_classes components are "
                                             "compared by BIC")
    seed: Integer = Field(0, ge=0, description="seed of the cell sample and of the fit")
    refit_growth: Real = Field(
        2.0, ge=1.0,
        description="refit the class model when the classifiable cells have grown by this "
                    "factor since the last fit (1: at every increment); otherwise new images "
                    "are assigned to the existing classes. After a refit the classes are "
                    "matched to the previous ones, so class ids stay the same")


class Settings(_Section):
    """The latticegenome workflow configuration."""

    scratch: str = Field("data", description="where raw images land (HPC scratch on a cluster)")
    results: str = Field("results", description="where results are written")
    facilities: dict[str, Facility] = Field(
        min_length=1, description="sources of raw images and destinations of results, by name")
    dft: DftSettings = Field(default_factory=DftSettings)
    globus: GlobusSettings = Field(default_factory=GlobusSettings,
                                   description="Globus settings, used when a facility has backend "
                                               "globus")
    analysis: AnalysisBlock = Field(default_factory=AnalysisBlock)
    classes: ClassSettings = Field(default_factory=ClassSettings)
    batch_size: Integer = Field(
        100, ge=1,
        description="images analysed by one find_columns job (one process start-up, one batch "
                    "job on a cluster); 10,000 images at 100 make 100 jobs. Changing it re-runs "
                    "the column finding.")
    mpi_launcher: str = Field(
        "mpirun", description="how MPI steps are launched (mpirun, srun, aprun); set by the "
                              "machine profile")
    publication: Publication | None = Field(
        None, description="where published packages go, and their license")
    people: list[Person] = Field(default_factory=list, description="people named in the RO-Crate")
    experiments: dict[ExperimentName, Experiment] = Field(
        min_length=1, description="the experiments, by name")

    @model_validator(mode="after")
    def _series_class_models_exist(self):
        for name, exp in self.experiments.items():
            other = exp.series_class_model
            if other is None:
                continue
            if other not in self.experiments:
                raise ValueError(f"experiment {name}: series_class_model {other!r} is not an "
                                 f"experiment of this config ({', '.join(self.experiments)})")
            if self.experiments[other].series:
                raise ValueError(f"experiment {name}: series_class_model {other!r} is a series "
                                 "experiment: it has no class model (name a non-series one)")
        return self

    def analysis_for(self, name: str) -> AnalysisSettings:
        """The analysis settings of experiment ``name``.

        The ``analysis:`` block, then the experiment's own ``analysis:``
        (only the keys it gives), its ``pixel_size_pm`` and ``hdf5_dataset``;
        ``spacing_pm`` defaults to the first material's ``a_pm``.
        """
        exp = self.experiments[name]
        values = self.analysis.model_dump()
        if exp.analysis is not None:
            values.update(exp.analysis.model_dump(exclude_unset=True))
        if values.get("spacing_pm") is None:
            values["spacing_pm"] = exp.materials[0].a_pm
        values.update({k: getattr(exp, k) for k in AnalysisSettings.FROM_EXPERIMENT
                       if k != "cations"})
        values["cations"] = [[m.A, m.B] for m in exp.materials]
        return AnalysisSettings.model_validate(values)

    @property
    def license(self) -> str:
        """The license of the published packages (the publication's, else the default)."""
        if self.publication is not None:
            return self.publication.license
        return Publication.model_fields["license"].default


# --------------------------------------------------------------------------- the schema


class _SchemaGenerator(GenerateJsonSchema):
    """Pydantic's JSON schema, in the form ``snakemake.utils.validate`` fills defaults from.

    - an optional field is its type without ``null`` and without a default
      (absent means none);
    - a section with defaults (``dft``, ``analysis``...) has ``default: {}``, so
      that validation fills in its fields' defaults;
    - dictionary keys with a pattern become ``propertyNames``;
    - no titles (the keys say it).
    """

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def nullable_schema(self, schema):
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema):
        if "default_factory" in schema:  # a section: {} (its fields carry their defaults)
            value = schema["default_factory"]()
            out = self.generate_inner(schema["schema"])
            out["default"] = {} if isinstance(value, BaseModel) else to_jsonable_python(value)
            return out
        out = super().default_schema(schema)
        if "default" in out and out["default"] is None:
            del out["default"]
        return out

    def dict_schema(self, schema):
        out = super().dict_schema(schema)
        patterns = out.pop("patternProperties", None)
        if patterns:
            (pattern, values), = patterns.items()
            out["propertyNames"] = {"pattern": pattern}
            out["additionalProperties"] = values
        return out


#: Key order in the written schema (any other key after these).
_ORDER = ("$schema", "description", "$ref", "type", "enum", "const", "pattern", "minimum",
          "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems",
          "minProperties", "propertyNames", "items", "required", "additionalProperties",
          "properties", "allOf", "if", "then", "default")
_SUBSCHEMA_MAPS = ("properties", "$defs")
_SUBSCHEMAS = ("items", "additionalProperties", "propertyNames", "if", "then", "else")


def _tidy(node: Any, *, model: bool = False) -> Any:
    """A schema node without titles, keys in :data:`_ORDER`, a model's description
    its first paragraph."""
    if isinstance(node, list):
        return [_tidy(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in _SUBSCHEMA_MAPS:
            value = {k: _tidy(v, model=key == "$defs") for k, v in value.items()}
        elif key in _SUBSCHEMAS or key in ("anyOf", "allOf", "oneOf"):
            value = _tidy(value)
        elif key == "description" and model:
            value = " ".join(value.split("\n\n")[0].split())
        out[key] = value
    rank = {k: i for i, k in enumerate(_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def json_schema() -> dict:
    """The JSON schema of the configuration, made from :class:`Settings`.

    Defaults are ``default`` keys of properties (``snakemake.utils.validate``
    and :func:`latticegenome.core.config.validate_config` fill them in); the
    facility backend rules are ``if``/``then``. Not expressed: finiteness
    (YAML's ``.nan``), which :func:`latticegenome.core.config.check_finite`
    checks.
    """
    schema = Settings.model_json_schema(schema_generator=_SchemaGenerator,
                                        ref_template="#/$defs/{model}")
    schema["$schema"] = SCHEMA_DIALECT
    return _tidy(schema, model=True)


SCHEMA_HEADER = (
    "# GENERATED from the settings model (src/latticegenome/core/settings.py) by\n"
    "# `latticegenome settings-schema`: do not edit. Change a field of the model, then run\n"
    "# `latticegenome settings-schema`; tests/test_settings.py checks that this file is current.\n"
)


def schema_yaml() -> str:
    """``config/schema.yaml`` as it should be: :func:`json_schema` in YAML, with a header."""
    body = yaml.safe_dump(json_schema(), sort_keys=False, width=96, allow_unicode=True)
    return SCHEMA_HEADER + body


__all__ = ["AnalysisBlock", "AnalysisOverrides", "AnalysisSettings", "DftSettings", "Experiment",
           "Facility", "GlobusSettings", "LatticePm", "ZONE_AXIS_FAMILIES", "ZoneAxis", "Material", "Person", "PixelSizePm",
           "Publication", "ScanPair", "Settings", "json_schema", "schema_yaml", "zone_axis_family"]
