"""One image file in, its refined columns out: the per-image analysis.

Used by the command line (``latticegenome columns``) and by the workflow's
per-image rule, so both give the same numbers.

With ``scan_pair`` set (:class:`~latticegenome.core.settings.ScanPair`), a
frame recorded with a 0-degree fast scan (``field_0.tif``) is analysed with
its 90-degree partner from the same folder (``field_90.tif``): the pair's
scan distortion is corrected first
(:func:`~latticegenome.columns.scanpair.correct_orthogonal_pair`) and the
corrected average analysed; ``info["scan_pair"]`` of its columns records the
partner, its SHA-256, the fitted drifts and the residuals. A 0-degree frame
whose partner is not there (yet) is analysed alone, and ``info["scan_pair"]``
says so with a warning. The partner is found by name in the folder, never in
a list of files: a pair split across batches is still a pair, but a partner
that arrives in a later ingest increment than its 0-degree frame comes too
late (that frame was analysed alone, and is not analysed again).

Where both files record their scan rotation (``metadata["scan_rotation_deg"]``,
:mod:`~latticegenome.columns.readers`), the pair is checked to be one: the
partner's rotation less the 0-degree frame's, modulo 360, must be within
:data:`ORTHOGONAL_TOLERANCE_DEG` of 90 or 270 degrees, else the 0-degree frame
is rejected naming both files and both rotations (two frames of one scan
direction would give a wrong "correction"). The rotations are recorded in
``info["scan_pair"]``, with ``rotation_checked``. Whether the difference is 90
or 270 is not compared with ``scan_pair.rot90``: the sign of a scan rotation
differs between instruments (:mod:`~latticegenome.columns.scanpair`), so
neither tells the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from latticegenome.columns.finder import Columns, find_columns
from latticegenome.columns.projection import expected_contrast, projection_for
from latticegenome.columns.readers import Image, read_image
from latticegenome.core.errors import ImageReadError, LatticeGenomeError
from latticegenome.core.settings import AnalysisSettings, ScanPair

#: Largest departure (degrees) of a pair's scan-rotation difference from 90 or 270.
ORTHOGONAL_TOLERANCE_DEG = 5.0


@dataclass
class FileResult:
    """Columns of every frame of one file.

    ``frames`` pairs each analysed :class:`~latticegenome.columns.readers.Image` with its
    :class:`~latticegenome.columns.finder.Columns`.
    """

    path: str
    frames: list[tuple[Image, Columns]] = field(default_factory=list)

    @property
    def pixel_size_pm(self) -> float:
        return self.frames[0][0].pixel_size_pm

    def merged(self) -> Columns:
        """All frames' columns in one table, with a ``frame`` entry in info."""
        if len(self.frames) == 1:
            return self.frames[0][1]
        parts = [c for _, c in self.frames]
        arrays = {k: np.concatenate([getattr(c, k) for c in parts]) for k in parts[0].as_dict()}
        frame = np.concatenate([np.full(len(c), k) for k, c in enumerate(parts)])
        merged = Columns(**arrays, basis=parts[0].basis, origin=parts[0].origin,
                         dispersion=float(np.mean([c.dispersion for c in parts])),
                         info={"frames": len(parts)})
        merged.info["frame"] = frame.tolist()
        return merged


def scan_pair_role(path: str | Path, scan_pair: ScanPair | None) -> tuple[str, Path] | None:
    """Which frame of a pair a file is, and where its partner is expected.

    Parameters
    ----------
    path : str or Path
    scan_pair : ScanPair or None
        The configured pairing (None: no pairing, the answer is None).

    Returns
    -------
    (role, partner) or None
        ``("0", <folder>/<stem less suffix_0 plus suffix_90><ext>)`` for a
        0-degree frame, ``("90", ...)`` the other way round for its partner
        (``suffix_90`` is tried first); None for a file that is neither.

    Examples
    --------
    >>> scan_pair_role("raw/field_0.tif", ScanPair())
    ('0', PosixPath('raw/field_90.tif'))
    >>> scan_pair_role("raw/field_90.tif", ScanPair())
    ('90', PosixPath('raw/field_0.tif'))
    >>> scan_pair_role("raw/field.tif", ScanPair()) is None
    True
    """
    if scan_pair is None:
        return None
    path = Path(path)
    stem, ext = path.stem, path.suffix
    s0, s90 = scan_pair.suffix_0, scan_pair.suffix_90
    for mine, other, role in ((s90, s0, "90"), (s0, s90, "0")):
        if stem.endswith(mine) and len(stem) > len(mine):
            return role, path.with_name(stem[: -len(mine)] + other + ext)
    return None


def _read_partner(path: Path, partner: Path, settings: AnalysisSettings) -> tuple[Image, str]:
    """The 90-degree partner's one image and its SHA-256; a problem is an
    error of ``path`` naming both."""
    from latticegenome.core.fsutil import sha256_file

    digest = sha256_file(partner)
    try:
        frames = read_image(partner, pixel_size_pm=settings.pixel_size_pm,
                            hdf5_dataset=settings.hdf5_dataset, stack=settings.stack,
                            signal=settings.signal)
    except LatticeGenomeError as exc:
        raise ImageReadError(f"its 90-degree partner {partner.name}: {exc.reason}", str(path)) from None
    if len(frames) != 1:
        raise ImageReadError(f"{path.name} and its 90-degree partner {partner.name}: a scan pair "
                             f"needs one image per file, {partner.name} gives {len(frames)} "
                             f"(stack: {settings.stack})", str(path))
    return frames[0], digest


def check_scan_rotation(path: str | Path, image: Image, partner: str | Path,
                        other: Image) -> dict:
    """Check from their metadata that two frames were scanned at orthogonal directions.

    Parameters
    ----------
    path : str or Path
        The 0-degree file (for the message).
    image : Image
        Its frame; ``image.metadata["scan_rotation_deg"]`` where the file records it.
    partner : str or Path
        The 90-degree file (for the message).
    other : Image
        The partner's frame, as read.

    Returns
    -------
    dict
        For ``info["scan_pair"]``: ``rotation_checked`` (both rotations known),
        ``scan_rotation_0_deg`` and ``scan_rotation_90_deg`` (where known) and,
        when checked, ``scan_rotation_difference_deg`` (partner less frame,
        modulo 360, in [0, 360)).

    Raises
    ------
    ImageReadError
        Of ``path``, naming both files and both rotations, when the difference
        is not within :data:`ORTHOGONAL_TOLERANCE_DEG` of 90 or 270 degrees.

    Examples
    --------
    >>> import numpy as np
    >>> def frame(deg):
    ...     return Image(np.zeros((2, 2)), 20.0, "file", "x", metadata={"scan_rotation_deg": deg})
    >>> rec = check_scan_rotation("a_0.dm4", frame(10.0), "a_90.dm4", frame(-80.0))
    >>> rec["rotation_checked"], rec["scan_rotation_difference_deg"]
    (True, 270.0)
    >>> check_scan_rotation("a_0.dm4", frame(10.0), "a_90.dm4", Image(np.zeros((2, 2)), 20.0,
    ...                     "file", "y"))
    {'rotation_checked': False, 'scan_rotation_0_deg': 10.0}
    """
    path, partner = Path(path), Path(partner)
    r0, r90 = (_rotation(i.metadata) for i in (image, other))
    record = {"rotation_checked": r0 is not None and r90 is not None,
              **({} if r0 is None else {"scan_rotation_0_deg": r0}),
              **({} if r90 is None else {"scan_rotation_90_deg": r90})}
    if not record["rotation_checked"]:
        return record
    diff = round((r90 - r0) % 360.0, 6) % 360.0
    off = min(abs(diff - 90.0), abs(diff - 270.0))
    if off > ORTHOGONAL_TOLERANCE_DEG:
        raise ImageReadError(
            f"{path.name} and its 90-degree partner {partner.name}: scan rotations "
            f"{round(r0, 4)} and {round(r90, 4)} deg: not an orthogonal pair (they differ by "
            f"{round(diff, 4)} deg modulo 360, not within {ORTHOGONAL_TOLERANCE_DEG:g} deg of 90 "
            f"or 270; see scan_pair suffix_0 and suffix_90)", str(path))
    return {**record, "scan_rotation_difference_deg": diff}


def _rotation(metadata: dict) -> float | None:
    """``metadata["scan_rotation_deg"]`` as a finite float, else None."""
    value = metadata.get("scan_rotation_deg")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def correct_scan_pair(path: str | Path, images: list[Image], partner: Path,
                      settings: AnalysisSettings) -> tuple[list[Image], dict]:
    """The 0-degree frame ``images`` of ``path`` corrected with its 90-degree partner.

    Parameters
    ----------
    path : str or Path
        The 0-degree file.
    images : list of Image
        Its frames as read (one is needed).
    partner : Path
        The 90-degree file (:func:`scan_pair_role`).
    settings : AnalysisSettings
        ``scan_pair.rot90`` turns the partner into the 0-degree frame's orientation.

    Returns
    -------
    images : list of Image
        The corrected average (the 0-degree frame's pixel size and metadata);
        ``images`` itself when the partner is not there.
    record : dict
        ``info["scan_pair"]``: the partner, its SHA-256, drifts (px/line),
        residuals, fraction of lines measured, the scan rotations (degrees)
        and ``rotation_checked`` (:func:`check_scan_rotation`); or a
        ``warning`` (no partner).

    Raises
    ------
    ImageReadError
        Naming both files: partner unreadable, of another shape or pixel
        size, scan rotations (from the metadata) not orthogonal, or the pair
        cannot be registered.
    """
    from latticegenome.columns.scanpair import correct_orthogonal_pair

    path, k = Path(path), settings.scan_pair.rot90
    if not partner.is_file():
        return images, alone_record(path, partner, "0")
    other, digest = _read_partner(path, partner, settings)
    if len(images) != 1:
        raise ImageReadError(f"{path.name} and its 90-degree partner {partner.name}: a scan pair "
                             f"needs one image per file, {path.name} gives {len(images)}", str(path))
    img = images[0]
    rotation = check_scan_rotation(path, img, partner, other)
    data_90 = np.rot90(other.data, k) if k % 4 else other.data
    if data_90.shape != img.data.shape:
        raise ImageReadError(f"{path.name} {img.data.shape} and its 90-degree partner "
                             f"{partner.name} {data_90.shape} (after rot90 {k}) differ in "
                             f"shape: not one field", str(path))
    if abs(other.pixel_size_pm / img.pixel_size_pm - 1) > 0.01:
        raise ImageReadError(f"{path.name} ({img.pixel_size_pm:g} pm) and its 90-degree partner "
                             f"{partner.name} ({other.pixel_size_pm:g} pm) differ in pixel size",
                             str(path))
    orientation = check_pair_orientation(path, partner, img.data, data_90, k)
    try:
        res = correct_orthogonal_pair(img.data, data_90)
    except ValueError as exc:
        raise ImageReadError(f"{path.name} and its 90-degree partner {partner.name}: {exc}",
                             str(path)) from None
    return [replace(img, data=res.average)], {
        **_pair_record(res, partner, digest, k, rotation),
        "orientation_checked": orientation["checked"],
        "orientation_correlation": orientation["correlation"]}


def check_pair_orientation(path: Path, partner: Path, data_0, data_90, k: int) -> dict:
    """:func:`~latticegenome.columns.scanpair.orientation_check` of a pair; a partner that
    shows the field turned (a wrong ``scan_pair.rot90``) rejects the pair, naming both
    files and the turn that fits: its correction would be wrong without a sign of it.

    Parameters
    ----------
    path, partner : Path
        The 0- and 90-degree files (for the message).
    data_0, data_90 : ndarray
        Their images, the partner turned by ``np.rot90(raw, k)``.
    k : int
        The configured quarter turns.

    Returns
    -------
    dict
        The check (``checked``, ``correlation``, ``turns`` 0, ``contrast``).

    Raises
    ------
    ImageReadError
        The partner matches the field turned by a further quarter or half turn.
    """
    from latticegenome.columns.scanpair import orientation_check

    found = orientation_check(data_0, data_90)
    t = found["turns"]
    if t:
        c = found["correlation"]
        fix = (k + t) % 4
        hint = (f"scan_pair.rot90 is probably {fix if fix != 3 else '3 (-1)'}, not {k}"
                if fix in (0, 1, 3) else "no rot90 setting turns it so: check the pair")
        raise ImageReadError(
            f"{path.name} and its 90-degree partner {partner.name}: the partner, turned by "
            f"rot90 {k}, shows the field turned by a further {90 * t} degrees (large-scale "
            f"correlation {c[t]:.2f} against {c[0]:.2f} as configured): {hint}", str(path))
    return found


def alone_record(path: Path, partner: Path, role: str) -> dict:
    """``info["scan_pair"]`` of a frame of a pair analysed alone: its partner
    was not in the folder. ``role``: ``"0"`` or ``"90"``, the frame's own."""
    later = ("a partner ingested later is not used: this frame is not analysed again"
             if role == "0" else
             "a 0-degree partner ingested later is analysed with this frame, and the field "
             "then counts twice")
    other = "90" if role == "0" else "0"
    return {"partner": partner.name, "corrected": False, "role": role,
            "warning": f"no {other}-degree partner {partner.name} in {partner.parent} when "
                       f"{path.name} was analysed: analysed alone, scan distortion not "
                       f"corrected ({later})"}


def _pair_record(res, partner: Path, digest: str, k: int, rotation: dict | None = None) -> dict:
    """``info["scan_pair"]`` of a corrected pair (no per-line offsets: an
    attribute must stay small); ``rotation``: what :func:`check_scan_rotation`
    found (None: not checked)."""
    s = res.summary()
    return {"partner": partner.name, "role": "0", "partner_sha256": digest, "corrected": True,
            "rot90": k, "reverse_90": bool(res.reverse_90),
            **(rotation or {"rotation_checked": False}),
            "drift_0_px_per_line": s["drift_0_px_per_line"],
            "drift_90_px_per_line": s["drift_90_px_per_line"],
            "offsets_rms_px": [s["offsets_0_px"]["rms_px"], s["offsets_90_px"]["rms_px"]],
            "residual_raw": res.residual_raw, "residual_linear": res.residual_linear,
            "residual": res.residual, "coverage_fraction": s["coverage_fraction"],
            "lines_measured_fraction": [float(np.mean(res.measured_0)),
                                        float(np.mean(res.measured_90))],
            "iterations": res.iterations}


def analyse_file(path: str | Path, settings: AnalysisSettings | Mapping | None = None,
                 **overrides) -> FileResult:
    """Read an image file and find its A and B columns.

    Parameters
    ----------
    path : str or Path
    settings : AnalysisSettings, mapping or None
        How to read and analyse the file (``pixel_size_pm``, used when the file
        has no pixel size; ``spacing_pm``, the nominal A-A spacing, a hint for
        the lattice search converted to pixels with the pixel size;
        ``hdf5_dataset``; ``stack``; ``significance``; ``b_search``). A plain
        dict is checked by the model; None: the defaults.
    **overrides
        Any field of :class:`~latticegenome.core.settings.AnalysisSettings` by
        name, replacing the one of ``settings``.

    With ``scan_pair`` set, a 0-degree frame is corrected with its partner
    first (:func:`correct_scan_pair`; ``info["scan_pair"]``). Any other file,
    a 90-degree frame included, is analysed as it is (the workflow does not
    analyse 90-degree frames on their own).

    Raises
    ------
    LatticeGenomeError
        Naming the file: unreadable, no pixel size, no lattice; a partner
        unreadable or of another shape (naming both).
    pydantic.ValidationError
        For an unknown setting or a value out of its range.

    Examples
    --------
    >>> res = analyse_file("image.tif", pixel_size_pm=20.0)  # doctest: +SKIP
    >>> res = analyse_file("image.tif", AnalysisSettings(significance=6.0))  # doctest: +SKIP
    """
    settings = AnalysisSettings.of(settings, **overrides)
    images = read_image(path, pixel_size_pm=settings.pixel_size_pm,
                        hdf5_dataset=settings.hdf5_dataset, stack=settings.stack,
                        signal=settings.signal)
    role = scan_pair_role(path, settings.scan_pair)
    pairing = None
    if role is not None and role[0] == "0":
        images, pairing = correct_scan_pair(path, images, role[1], settings)
    elif role is not None and not role[1].is_file():  # a 90-degree frame without its partner
        pairing = alone_record(Path(path), role[1], "90")
    result = FileResult(str(path))
    for img in images:
        try:
            cols = analyse_array(img.data, img.pixel_size_pm, settings)
        except LatticeGenomeError as exc:
            where = f" (frame {img.frame})" if img.frame is not None else ""
            raise type(exc)(exc.reason + where, str(path)) from None
        if pairing is not None:
            cols.info["scan_pair"] = pairing
        result.frames.append((img, cols))
    return result


def analyse_array(data: np.ndarray, pixel_size_pm: float,
                  settings: AnalysisSettings | Mapping | None = None, **overrides) -> Columns:
    """Find the columns of one 2-D image (an array) with the experiment's settings.

    The projected motif comes from ``zone_axis`` and the first of
    ``cations`` (default SrTiO3) with ``spacing_pm`` as its lattice
    parameter; the expected A/B contrast from all of ``cations``.

    Parameters
    ----------
    data : ndarray, shape (rows, cols)
    pixel_size_pm : float
    settings : AnalysisSettings, mapping or None
    **overrides
        Fields of :class:`~latticegenome.core.settings.AnalysisSettings`.

    Returns
    -------
    Columns

    Raises
    ------
    LatticeGenomeError
        No lattice, or the image does not fit the projection or contrast.
    """
    settings = AnalysisSettings.of(settings, **overrides)
    a_pm = settings.spacing_pm or 390.5
    projection = projection_for(settings.zone_axis, settings.cations, a_pm)
    spacing_px = projection.cell_pm[0] / pixel_size_pm if settings.spacing_pm else None
    fit_oxygen = {"auto": None, "fit": True, "skip": False}[settings.oxygen]
    cols = find_columns(
        data, projection=projection, contrast=settings.contrast, fit_oxygen=fit_oxygen,
        spacing_px=spacing_px, pixel_size_pm=pixel_size_pm,
        expected_contrast=expected_contrast(settings.zone_axis, settings.cations),
        significance=settings.significance, b_search=settings.b_search,
        probe_tail=settings.probe_tail, shared_width=settings.column_width == "auto")
    cols.info["projection"] = projection.as_record()
    return cols
