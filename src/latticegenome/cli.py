"""The ``latticegenome`` command.

Errors in the input (unreadable file, no pixel size, no lattice, bad
configuration, a number out of range, an output that would overwrite an
input) print one line naming the file, key or option and the problem and exit
with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import types
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from latticegenome import __version__
from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.settings import (
    AnalysisSettings,
    Experiment,
    Integer,
    Material,
    PixelSizePm,
)


class FieldOption(NamedTuple):
    """A command-line option made from a field of a settings model."""

    model: type[BaseModel]
    field: str
    flag: str | None = None  # default --<field with dashes>
    help: str | None = None  # default the field's description


def _columns_options() -> type[AnalysisSettings]:
    """:class:`AnalysisSettings`, with ``--stack frames`` too (each frame on its own:
    the command line only; the workflow sums or aligns)."""
    stack = copy.copy(AnalysisSettings.model_fields["stack"])
    stack.description = "3-D stacks: each frame, their sum, or their aligned sum"
    return create_model("ColumnsOptions", __base__=AnalysisSettings, __module__=__name__,
                        stack=(Literal["frames", "sum", "align"], stack))


ColumnsOptions = _columns_options()


class SimulateOptions(BaseModel):
    """Options of ``latticegenome simulate`` (the embedded demo's images)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    images: Integer = Field(12, ge=1, le=100_000, description="number of images")
    size: Integer = Field(512, ge=64, le=16384, description="image side in pixels",
                          json_schema_extra={"unit": "px"})
    seed: Integer = Field(20261123, ge=0, description="seed of the simulation (the same seed "
                                                      "writes the same images)")
    pixel_size_pm: PixelSizePm = Field(20.0, description="pixel size of the images in pm")
    probe_tail_fraction: float = Field(
        0.15, ge=0.0, le=0.45,
        description="share of the light in the probe's coma-like tail (60 pm wide, 80 pm "
                    "along y; 0: none): it moves every column a few pm along y")
    series: Integer | None = Field(
        None, ge=2, le=10_000,
        description="instead, one image series of this many frames (series.tif, its frames' "
                    "metadata series.frames.csv and its truth): drift, scan distortion, a "
                    "moving polar domain wall, a temperature ramp, columns lost with dose")


#: The options of each command made from settings fields (see :func:`add_field_option`).
FIELD_OPTIONS = {
    "simulate": [FieldOption(SimulateOptions, name) for name in SimulateOptions.model_fields],
    "columns": [FieldOption(ColumnsOptions, name) for name in AnalysisSettings.column_fields()
                if name not in AnalysisSettings.NOT_OPTIONS],
    "cells": [FieldOption(AnalysisSettings, "pixel_size_pm", help="default: the file's"),
              FieldOption(Material, "a_pm", "--reference-pm",
                          "reference lattice parameter for strain in pm")],
    "classify": [FieldOption(Material, "a_pm", "--nominal-pm",
                             "reference lattice parameter for strain in pm"),
                 FieldOption(Experiment, "stacking_axis"),
                 *(FieldOption(AnalysisSettings, name) for name in AnalysisSettings.STATISTICS_ONLY)],
}


def _flatten(annotation):
    """(type, choices, constraints) of a field annotation: Optional, Annotated
    and Literal unwrapped."""
    constraints = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                constraints.extend(getattr(item, "metadata", None) or [item])
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        elif origin is Literal:
            return str, tuple(get_args(annotation)), constraints
        else:
            return annotation, None, constraints


def _bounds_text(constraints, unit: str) -> str:
    """``between 0.5 and 2000 pm``, ``> 0``, ``> 0 and <= 0.5``: the range in words."""
    low = [(c.gt, ">") for c in constraints if isinstance(c, at.Gt)] + \
          [(c.ge, ">=") for c in constraints if isinstance(c, at.Ge)]
    high = [(c.lt, "<") for c in constraints if isinstance(c, at.Lt)] + \
           [(c.le, "<=") for c in constraints if isinstance(c, at.Le)]
    if low and high and low[0][1] == ">=" and high[0][1] == "<=":
        text = f"between {low[0][0]:g} and {high[0][0]:g}"
    else:
        text = " and ".join(f"{op} {value:g}" for value, op in low[:1] + high[:1])
    return f"{text} {unit}".strip()


def _unit(info, name: str) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return extra.get("unit") or next((u for u in ("pm", "px") if name.endswith(f"_{u}")), "")


def field_type(model: type[BaseModel], name: str):
    """An argparse ``type`` for a numeric field: a finite number of the field's
    kind, within the field's range (its constraints, checked by pydantic).

    Returns
    -------
    callable
        Parses the option's text; raises ``argparse.ArgumentTypeError`` (one
        line after ``argument --option:``) for anything else, NaN and
        infinities included.

    Examples
    --------
    >>> field_type(AnalysisSettings, "b_search")("0.25")
    0.25
    """
    info = model.model_fields[name]
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    kind, _, constraints = _flatten(annotation)
    adapter = TypeAdapter(annotation)
    what = "an integer" if kind is int else "a finite number"
    bounds = _bounds_text(constraints, _unit(info, name))

    def parse(text: str):
        try:
            value = kind(text)
            if kind is float and not math.isfinite(value):
                raise ValueError(text)
            return adapter.validate_python(value)
        except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
            raise argparse.ArgumentTypeError(f"must be {what} {bounds}, not {text!r}") from None

    parse.__name__ = f"{kind.__name__} {bounds}"
    return parse


def _species_pair(text: str) -> tuple[str, str]:
    """``"Sr,Ru"`` -> ("Sr", "Ru"): two element symbols."""
    from pymatgen.core import Element

    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError(text)
        for p in parts:
            Element(p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give the A and B species as two element symbols, "
                                         f"e.g. Sr,Ru; not {text!r}") from None
    return parts[0], parts[1]


def add_field_option(parser: argparse.ArgumentParser, option: FieldOption) -> None:
    """Add the option of a settings field: its name, type, range, default and help.

    The default is the field's; the help its description (or ``option.help``).
    """
    info = option.model.model_fields[option.field]
    kind, choices, _ = _flatten(info.annotation)
    default = None if info.is_required() else info.default
    text = option.help or info.description or ""
    if default is not None:
        text += f" (default {default})"
    kwargs = {"default": default, "help": text}
    if choices:
        kwargs["choices"] = choices
    elif kind in (int, float):
        kwargs["type"] = field_type(option.model, option.field)
    flag = option.flag or "--" + option.field.replace("_", "-")
    parser.add_argument(flag, dest=flag[2:].replace("-", "_"), **kwargs)


def add_field_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Every option of :data:`FIELD_OPTIONS` for ``command``."""
    for option in FIELD_OPTIONS[command]:
        add_field_option(parser, option)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (same resolved path, or the same inode:
    hard links, symbolic links, other spellings)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def refuse_overwrite(outputs, inputs) -> None:
    """Refuse to run when an output path would replace an input or another output.

    Parameters
    ----------
    outputs : iterable of path or None
        What the command writes (None entries are options not given).
    inputs : iterable of path
        What it reads.

    Raises
    ------
    LatticeGenomeError
        ``<output>: output would overwrite an input`` (or another output).
    """
    outputs = [Path(o) for o in outputs if o is not None]
    inputs = [Path(i) for i in inputs]
    for k, out in enumerate(outputs):
        if any(_same_file(out, inp) for inp in inputs):
            raise LatticeGenomeError("output would overwrite an input", str(out))
        if any(_same_file(out, other) for other in outputs[:k]):
            raise LatticeGenomeError("output would overwrite another output of this command",
                                     str(out))


def _cmd_simulate(args) -> int:
    from latticegenome.columns.simulate import write_demo_experiment

    if args.series:
        from latticegenome.dynamics.simulate import write_series

        paths = write_series(args.outdir, n_frames=args.series, size=args.size, seed=args.seed,
                             pixel_size_pm=args.pixel_size_pm)
        print(f"{args.series} frames in {paths['tif']} (metadata {paths['frames_csv'].name}, "
              f"truth {paths['truth'].name})")
        return 0

    paths = write_demo_experiment(args.outdir, n_images=args.images, size=args.size,
                                  seed=args.seed, pixel_size_pm=args.pixel_size_pm,
                                  probe_tail_fraction=args.probe_tail_fraction)
    print(f"{len(paths)} images in {args.outdir}")
    return 0


def _source_text(source: str) -> str:
    """Where the pixel size came from, in the command line's words."""
    return "command line (--pixel-size-pm)" if source == "config" else source


def _cmd_columns(args) -> int:
    from latticegenome.columns.analysis import analyse_file
    from latticegenome.columns.store import write_columns_csv, write_columns_h5

    sidecar = Path(f"{args.csv}.json") if args.csv else None  # the CSV's metadata beside it
    refuse_overwrite([args.csv, sidecar, args.h5], [args.image])
    given = {name: getattr(args, name) for name in AnalysisSettings.column_fields()
             if name not in AnalysisSettings.NOT_OPTIONS}
    if args.species:
        given["cations"] = [list(args.species)]
    res = analyse_file(args.image, ColumnsOptions.model_validate(given))
    cols = res.merged()
    if args.csv:
        write_columns_csv(args.csv, cols, pixel_size_pm=res.pixel_size_pm, source=str(args.image))
    if args.h5:
        img = res.frames[0][0]
        write_columns_h5(args.h5, cols, source=str(args.image), pixel_size_pm=res.pixel_size_pm,
                         shape=img.data.shape, metadata=img.metadata)
    n = {s: int((cols.site == s).sum()) for s in ("A", "B", "O")}
    counts = f"{n['A']} A, {n['B']} B" + (f" and {n['O']} O" if n["O"] else "")
    print(f"{args.image}: {counts} columns "
          f"(pixel size {res.pixel_size_pm:.4g} pm, from the "
          f"{_source_text(res.frames[0][0].pixel_size_source)})")
    return 0


def _cmd_cells(args) -> int:
    from latticegenome.columns.store import read_columns
    from latticegenome.core.errors import ImageReadError
    from latticegenome.core.tables import write_table_csv
    from latticegenome.core.fsutil import atomic_write
    from latticegenome.statistics.cells import CELL_FIELDS
    from latticegenome.statistics.reference import corrected_cells, parse_region

    refuse_overwrite([args.csv, Path(f"{args.csv}.json")], [args.columns])
    cols, attrs = read_columns(args.columns)
    px = args.pixel_size_pm or attrs.get("pixel_size_pm")
    if px is None or not px == px:
        raise ImageReadError("no pixel size in the file: give --pixel-size-pm", args.columns)
    if attrs.get("status", "ok") != "ok":
        raise ImageReadError(f"the image was rejected: {attrs.get('reason', '')}", args.columns)
    if "site" not in cols or not (cols["site"] == "B").any():
        raise ImageReadError("no B columns: cells need the secondary lattice", args.columns)
    for need in ("i", "j", "x_err", "y_err", "amplitude", "sigma"):
        if need not in cols:
            raise ImageReadError(f"column '{need}' missing: write it with 'latticegenome columns'",
                                 args.columns)
    try:
        region = parse_region(args.displacement_reference)
        cells, applied = corrected_cells(
            cols, float(px), projection=(attrs.get("info") or {}).get("projection"),
            displacement_region=region, calibrate_to_pm=args.calibrate_to_pm,
            calibration_region=region if region is not None else "all",
            reference_pm=(args.reference_pm, args.reference_pm) if args.reference_pm else None)
    except ValueError as exc:
        raise ImageReadError(str(exc), args.columns) from None
    fisher = ("dx_err_fisher_pm", "dy_err_fisher_pm") if region is not None else ()
    write_table_csv(args.csv, cells, (*CELL_FIELDS, *fisher))
    with atomic_write(Path(f"{args.csv}.json"), "w") as side:
        json.dump({"source": str(args.columns), "pixel_size_pm": float(px), **applied}, side,
                  indent=1, default=float)
        side.write("\n")
    ref, calib = applied["displacement_reference"], applied["calibration"]
    extra = (f"; offset ({ref['dx_pm']:+.2f}, {ref['dy_pm']:+.2f}) pm subtracted, errors x"
             f"{ref['error_scale']:.2f}" if ref else "") + (
        f"; pixel size {calib['pixel_size_pm']:.4g} -> {calib['calibrated_pixel_size_pm']:.4g} pm "
        f"(scales {calib['scale_i']:.4f} / {calib['scale_j']:.4f})" if calib else "")
    print(f"{args.columns}: {len(cells['x'])} cells{extra}")
    return 0


def _cmd_classify(args) -> int:
    import numpy as np

    from latticegenome.columns.store import read_columns
    from latticegenome.core.errors import ImageReadError
    from latticegenome.statistics.aggregate import aggregate
    from latticegenome.statistics.cells import measure_cells

    out = args.out
    stem = out.with_suffix("")
    side = {k: f"{stem}.{k}" for k in ("images.tsv", "rejected.tsv", "classes.csv", "layers.csv")}
    refuse_overwrite([out, *side.values()], args.results)
    for path in args.results:  # every input must be usable: say which is not
        cols, attrs = read_columns(path)
        if attrs.get("status", "ok") != "ok":
            raise ImageReadError(f"the image was rejected: {attrs.get('reason', '')}", path)
        if "site" not in cols or not np.any(cols["site"] == "B"):
            raise ImageReadError("no B columns: cells need the secondary lattice", path)
        px = attrs.get("pixel_size_pm")
        if px is None or not np.isfinite(px):
            raise ImageReadError("no pixel size in the file", path)
        try:
            measure_cells(cols, float(px), projection=(attrs.get("info") or {}).get("projection"))
        except (ValueError, KeyError) as exc:
            raise ImageReadError(f"no unit cell: {exc}", path) from None
    summary = aggregate(
        args.results, out, side["images.tsv"], side["rejected.tsv"],
        classes_csv=side["classes.csv"], layers_csv=side["layers.csv"],
        nominal_pm=args.nominal_pm, stacking_axis=args.stacking_axis,
        lattice_tolerance=args.lattice_tolerance,
    )
    print(f"{summary['cells']} cells from {summary['images_used']} files, {summary['classes']} classes; "
          f"class table {stem}.classes.csv, layers {stem}.layers.csv")
    return 0


def _cmd_provenance(args) -> int:
    import json

    from latticegenome.provenance.chain import (
        chain_problems,
        format_chain,
        raw_sources,
        trace,
    )

    if not args.file.exists():
        raise LatticeGenomeError("no such file", str(args.file))
    chain = trace(args.file)
    if chain["record"] is None:
        raise LatticeGenomeError("no provenance record (no attribute, no .prov.json beside it)",
                                 str(args.file))
    raws = raw_sources(chain)
    problems = chain_problems(chain)
    if args.json:
        print(json.dumps({"chain": chain, "raw_images": raws, "verified": not problems,
                          "problems": problems}, indent=1, default=str))
    else:
        print(format_chain(chain))
        print(f"\n{len(raws)} raw image(s):")
        for r in raws:
            inst = r.get("instrument") or {}
            print(f"  {r.get('collection')}/{r.get('source_path')}  sha256 {r.get('sha256')}  "
                  f"task {r.get('task_id')}  " + ", ".join(f"{k}={v}" for k, v in inst.items()))
        print(f"\n{len(problems)} file(s) changed or missing:" if problems else "\nall verified")
        for line in problems:
            print(f"  {line}")
    return 1 if problems else 0


def _cmd_install_profiles(args) -> int:
    from latticegenome.profiles import install_profiles

    for line in install_profiles(args.profiles_dir, args.target):
        print(line)
    return 0


def _cmd_render_profiles(args) -> int:
    from latticegenome.profiles import render_profiles

    lines = render_profiles(args.profiles_dir, check=args.check)
    for line in lines:
        print(line)
    return 1 if args.check and lines else 0


def _cmd_check_config(args) -> int:
    from latticegenome.core.config import load_config

    cfg = load_config(args.config, args.schema)
    print(f"{args.config}: valid ({len(cfg['experiments'])} experiments)")
    return 0


#: The checkout's config/schema.yaml (made from the settings model).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def _cmd_settings_schema(args) -> int:
    from latticegenome.core.fsutil import atomic_write
    from latticegenome.core.settings import schema_yaml

    text = schema_yaml()
    try:
        current = args.output.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current == text:
        print(f"{args.output}: up to date")
        return 0
    if args.check:
        print(f"{args.output}: differs from the settings model; run 'latticegenome settings-schema'")
        return 1
    with atomic_write(args.output, "w") as fh:
        fh.write(text)
    print(f"{args.output}: written from the settings model")
    return 0


def _cmd_login(args) -> int:
    from latticegenome.core.config import load_config
    from latticegenome.ingest.globus import login

    login(load_config(args.config, args.schema), force=args.force)
    return 0


def _cmd_logout(args) -> int:
    from latticegenome.core.config import load_config
    from latticegenome.ingest.globus import logout

    logout(load_config(args.config, args.schema))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latticegenome", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"latticegenome {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_analysis_commands(sub)
    _add_workflow_commands(sub)
    _add_descan_command(sub)
    _add_watch_command(sub)
    _add_track_command(sub)
    return p


def _series_frames(paths, pixel_size_pm):
    """The frames of a series: one file with frames, or one frame per file, in order."""
    from latticegenome.columns.readers import read_image

    images = [im for p in paths for im in read_image(p, pixel_size_pm=pixel_size_pm,
                                                      stack="frames", check_frames=False)]
    sizes = {round(im.pixel_size_pm, 6) for im in images}
    if len(sizes) > 1:
        raise LatticeGenomeError(f"the frames have different pixel sizes ({sorted(sizes)} pm)",
                                 str(paths[0]))
    return images, images[0].pixel_size_pm


def _cmd_track(args) -> int:
    """Follow the columns of an image series frame by frame."""
    from latticegenome.dynamics.framemeta import series_frame_meta
    from latticegenome.dynamics.track import track_series, write_track_outputs

    refuse_overwrite([args.csv, args.h5], args.series)
    given = {name: getattr(args, name) for name in AnalysisSettings.column_fields()
             if name not in AnalysisSettings.NOT_OPTIONS and name != "stack"}
    images, px = _series_frames(args.series, given.get("pixel_size_pm"))
    frames = [im.data for im in images]
    # time, temperature, dose: the CSV's fields, the others from the files' metadata
    meta, sources = series_frame_meta(images, args.frames_csv, source=str(args.series[0]))
    settings = AnalysisSettings.model_validate({**given, "pixel_size_pm": px})
    result = track_series(frames, px, settings, source=str(args.series[0]), meta=meta,
                          max_gap=args.max_gap)
    write_track_outputs(result, csv=args.csv, h5=args.h5,
                        provenance={"command": "latticegenome track", "max_gap": args.max_gap,
                                    "series": [str(p) for p in args.series], **sources})
    for k, why in result["set_aside"]:
        print(f"{args.series[0]}: frame {k} set aside: {why}", file=sys.stderr)
    import numpy as np

    reg = result["registration"]
    for n, f in enumerate(result["frames"]):
        if reg["lattice_shift_ambiguous"][n]:
            print(f"{args.series[0]}: frame {f['frame']}: registration ambiguous by a whole "
                  "lattice vector (its tracks may be those of the neighbouring sites)",
                  file=sys.stderr)
    print(f"{args.series[0]}: {len(result['frames'])} of {len(frames)} frames tracked; "
          f"registration residual {np.nanmedian(reg['residual_rms_px']):.3f} px (median)")
    return 0


def _add_track_command(sub) -> None:
    """track: an image series followed column by column."""
    t = sub.add_parser(
        "track", help="follow the columns of an image series frame by frame",
        description="Find the columns of every frame of an image series (one file with "
                    "frames, or one file per frame in order), register the frames (rigid, "
                    "then a smooth field fitted to the lattice), give every column a track id "
                    "(the same lattice site in every frame) and write one row per column per "
                    "frame: frame, track, site, x, y (registered into the first frame, px), "
                    "x_err, y_err, x_raw, y_raw (the frame's own), detected, intensity. A frame "
                    "with no lattice is set aside with its reason; the rest go on.")
    t.add_argument("series", type=Path, nargs="+", metavar="SERIES",
                   help="a file with frames, or the frames' files in order")
    for option in FIELD_OPTIONS["columns"]:
        if option.field != "stack":
            add_field_option(t, option)
    t.add_argument("--frames-csv", type=Path, metavar="CSV",
                   help="per-frame metadata: frame, time_s, temperature_K, dose_e_per_A2")
    t.add_argument("--max-gap", type=int, default=1, metavar="N",
                   help="a column missed in up to N frames in a row keeps its track (default 1)")
    t.add_argument("--csv", type=Path, required=True, metavar="OUT.csv")
    t.add_argument("--h5", type=Path, metavar="OUT.h5",
                   help="also dynamics.h5: tracks, registration, per-cell series, summaries")
    t.set_defaults(func=_cmd_track)


def _cmd_watch(args) -> int:
    """Poll the facilities; run the workflow on each increment; keep results/live.html."""
    import logging

    from latticegenome.watch import watch

    logging.basicConfig(level=logging.INFO, format="latticegenome watch: %(message)s")
    try:
        return watch(args.configfile, profile=args.profile, experiments=args.experiment or None,
                     interval=args.interval, directory=args.directory, snakefile=args.snakefile,
                     once=args.once, extra_args=args.snakemake_args)
    except (OSError, ValueError) as exc:
        print(f"latticegenome watch: error: {exc}", file=sys.stderr)
        return 2


def _add_watch_command(sub) -> None:
    """watch: images analysed as they land, a live page."""
    w = sub.add_parser(
        "watch", help="analyse images as they land at the facility; keep results/live.html",
        description="Poll each experiment's facility folder; when new images arrived, run the "
                    "workflow once for them (ingest, columns, cells, the merged statistics: "
                    "nothing already done is redone) and rewrite results/live.html, a page "
                    "that refreshes itself. Ctrl-C or SIGTERM stops between increments (a "
                    "second one stops the running increment); a restart resumes. Snakemake's "
                    "output goes to .latticegenome-watch.log.")
    w.add_argument("--profile", default="local",
                   help="Snakemake profile of each increment (default local; on a cluster's "
                        "login node its profile, e.g. titan)")
    w.add_argument("--experiment", action="append", metavar="NAME",
                   help="watch this experiment (repeat for more; default all)")
    w.add_argument("--interval", type=float, default=2.0, metavar="S",
                   help="seconds between polls (default 2; a poll lists the facility folder)")
    w.add_argument("--configfile", default="config/config.yaml",
                   help="workflow configuration (default config/config.yaml)")
    w.add_argument("--directory", default=".", help="the workflow's working directory")
    w.add_argument("--snakefile", default=None, help="default: Snakefile in the directory")
    w.add_argument("--once", action="store_true", help="one poll (and increment), then stop")
    w.add_argument("snakemake_args", nargs="*", metavar="-- SNAKEMAKE_ARGS",
                   help="more Snakemake options for each increment, after --")
    w.set_defaults(func=_cmd_watch)


def _cmd_descan(args) -> int:
    """Correct the scan distortion of a 0/90-degree frame pair; write the average."""
    import numpy as np
    import tifffile

    from latticegenome.columns.analysis import check_pair_orientation, check_scan_rotation
    from latticegenome.columns.readers import read_image
    from latticegenome.columns.scanpair import correct_orthogonal_pair
    from latticegenome.core.errors import ImageReadError
    from latticegenome.core.fsutil import atomic_path, atomic_write

    sidecar = Path(f"{args.out}.json")
    refuse_overwrite([args.out, sidecar], [args.frame_0, args.frame_90])
    # The pixel size is not used (all in px): 1 pm stands in for a file without one.
    frames = [read_image(path, pixel_size_pm=1.0, stack="align")[0]
              for path in (args.frame_0, args.frame_90)]
    rotation = check_scan_rotation(args.frame_0, frames[0], args.frame_90, frames[1])
    k = args.rot90 or 0  # the partner turned as it will be, checked against the field
    orientation = check_pair_orientation(Path(args.frame_0), Path(args.frame_90), frames[0].data,
                                     np.rot90(frames[1].data, k) if k % 4 else frames[1].data, k)
    try:
        res = correct_orthogonal_pair(frames[0].data, frames[1].data,
                                      rotation=args.rot90 or None, max_drift=args.max_drift)
    except ValueError as exc:
        raise ImageReadError(str(exc), args.frame_90) from None
    sizes = [f.pixel_size_pm if f.pixel_size_source == "file" else None for f in frames]
    kwargs = {}
    if sizes[0] is not None:
        kwargs = {"resolution": (1000.0 / sizes[0], 1000.0 / sizes[0]),
                  "metadata": {"unit": "nm", "axes": "YX"}}
    with atomic_path(args.out) as tmp:
        tifffile.imwrite(tmp, res.average.astype(np.float32), imagej=True, **kwargs)
    with atomic_write(sidecar, "w") as side:
        json.dump({"frame_0": str(args.frame_0), "frame_90": str(args.frame_90),
                   "rot90": args.rot90, "pixel_size_pm": sizes, **rotation,
                   "orientation_checked": orientation["checked"],
                   "orientation_correlation": orientation["correlation"], **res.summary()}, side,
                  indent=1, default=float)
        side.write("\n")
    print(f"{args.out}: drift 0/90 ({res.drift_0[0]:+.4f}, {res.drift_0[1]:+.4f}) / "
          f"({res.drift_90[0]:+.4f}, {res.drift_90[1]:+.4f}) px/line; residual "
          f"{res.residual_raw:.3f} -> {res.residual:.3f}")
    return 0


def _drift_rate(text: str) -> float:
    """``--max-drift``: a finite number of px per line, > 0 and <= 0.5."""
    try:
        value = float(text)
        if not 0 < value <= 0.5:
            raise ValueError(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 and <= 0.5 px per "
                                         f"line, not {text!r}") from None
    return value


def _add_descan_command(sub) -> None:
    """descan: scan-distortion correction of a frame pair with orthogonal fast scans."""
    d = sub.add_parser(
        "descan", help="correct the scan distortion of two frames with orthogonal fast scans",
        description="Correct the scan distortion of two frames of one field recorded with "
                    "fast scans along x (FRAME_0) and along y (FRAME_90), Ophus-style "
                    "(latticegenome.columns.scanpair); write their corrected average as a "
                    "float32 TIFF and OUT.tif.json with the drift, per-line offsets (px) and "
                    "residuals.")
    d.add_argument("frame_0", type=Path, metavar="FRAME_0", help="fast scan along x")
    d.add_argument("frame_90", type=Path, metavar="FRAME_90",
                   help="fast scan along y, in FRAME_0's orientation unless --rot90")
    d.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.tif")
    d.add_argument("--rot90", type=int, choices=(0, 1, 3, -1), default=0, metavar="K",
                   help="turn FRAME_90 by np.rot90(FRAME_90, K) into FRAME_0's orientation "
                        "(1, 3 or -1; default 0: already turned)")
    d.add_argument("--max-drift", type=_drift_rate, default=0.05, metavar="PX",
                   help="largest linear drift searched, px per line (default 0.05)")
    d.set_defaults(func=_cmd_descan)


def _add_analysis_commands(sub) -> None:
    """simulate, columns, cells, classify: their settings options made from the model."""
    s = sub.add_parser("simulate", help="write the embedded demo experiment (seeded)")
    s.add_argument("outdir", type=Path)
    add_field_options(s, "simulate")
    s.set_defaults(func=_cmd_simulate)

    c = sub.add_parser("columns", help="find and refine the A and B columns of one image")
    c.add_argument("image", type=Path)
    add_field_options(c, "columns")
    c.add_argument("--species", type=_species_pair, metavar="A,B",
                   help="A- and B-site species of the material (e.g. Sr,Ru): which projected "
                        "columns are brightest (default Sr,Ti)")
    c.add_argument("--csv", type=Path, help="write the columns here (CSV)")
    c.add_argument("--h5", type=Path, help="write the columns here (HDF5)")
    c.set_defaults(func=_cmd_columns)

    e = sub.add_parser("cells", help="measure the unit cells of one image's columns")
    e.add_argument("columns", type=Path, help="CSV or HDF5 written by 'latticegenome columns'")
    add_field_options(e, "cells")
    e.add_argument("--displacement-reference", metavar="all|x0,y0,x1,y1",
                   help="centrosymmetric reference of the B displacement: the whole image, or a "
                        "box in pixels; its mean is subtracted (the instrument offset) and the "
                        "errors are scaled to its scatter (the Fisher-only ones kept)")
    e.add_argument("--calibrate-to-pm", type=field_type(Material, "a_pm"), metavar="A",
                   help="known lattice parameter (pm) of the reference (the region above, else "
                        "the whole image): the pixel size and scan anisotropy are fitted to it")
    e.add_argument("--csv", type=Path, required=True)
    e.set_defaults(func=_cmd_cells)

    g = sub.add_parser("classify", help="classify and aggregate the cells of many images")
    g.add_argument("results", type=Path, nargs="+", help="column files (HDF5 or CSV)")
    g.add_argument("--out", type=Path, required=True, help="HDF5 file; CSV copies beside it")
    add_field_options(g, "classify")
    g.set_defaults(func=_cmd_classify)


def _add_workflow_commands(sub) -> None:
    """provenance, profiles, configuration and Globus login."""
    v = sub.add_parser(
        "provenance", help="the chain from a result back to the raw images",
        description="Print the chain from a result back to the raw images, checking every "
                    "input against the checksum recorded when its consumer was made and every "
                    "raw copy against its ingest manifest. Exit status 0 when everything "
                    "verifies, exit status 1 when anything in the chain changed or is missing, "
                    "2 on errors (no such file, no provenance record).")
    v.add_argument("file", type=Path)
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=_cmd_provenance)

    i = sub.add_parser("install-profiles",
                       help="make 'snakemake --profile NAME' find this repository's profiles")
    i.add_argument("--profiles-dir", type=Path, default=Path("profiles"))
    i.add_argument("--target", type=Path, default=None,
                   help="default: $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake")
    i.set_defaults(func=_cmd_install_profiles)

    r = sub.add_parser("render-profiles",
                       help="write the SLURM machines' profiles from profiles/slurm-template.yaml "
                            "and profiles/machines.yaml")
    r.add_argument("--profiles-dir", type=Path, default=Path("profiles"))
    r.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a profile differs from what would be written")
    r.set_defaults(func=_cmd_render_profiles)

    k = sub.add_parser("check-config", help="validate a workflow configuration")
    k.add_argument("config", type=Path, nargs="?", default=Path("config/config.yaml"))
    k.add_argument("--schema", type=Path, default=None,
                   help="default: schema.yaml beside the configuration, else the checkout's "
                        "config/schema.yaml")
    k.set_defaults(func=_cmd_check_config)

    m = sub.add_parser("settings-schema",
                       help="write config/schema.yaml from the settings model "
                            "(latticegenome.core.settings)")
    m.add_argument("--output", type=Path, default=SCHEMA_PATH,
                   help="default: the checkout's config/schema.yaml")
    m.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the file differs from the model's schema")
    m.set_defaults(func=_cmd_settings_schema)

    for name, func, text in (
        ("login", _cmd_login, "log in to Globus (consent for every collection in the config)"),
        ("logout", _cmd_logout, "revoke and remove the stored Globus tokens"),
    ):
        a = sub.add_parser(name, help=text)
        a.add_argument("--config", type=Path, default=Path("config/config.yaml"))
        a.add_argument("--schema", type=Path, default=None)
        if name == "login":
            a.add_argument("--force", action="store_true", help="log in again even if not needed")
        a.set_defaults(func=func)


def _figures_without_display() -> None:
    """Matplotlib draws to files (Agg), set once here before any figure is
    imported; the library never sets it."""
    import matplotlib

    matplotlib.use("Agg")


def main(argv: list[str] | None = None) -> int:
    from latticegenome.core._memory import return_freed_memory

    return_freed_memory()
    args = build_parser().parse_args(argv)
    _figures_without_display()  # before any command imports a figure
    try:
        return args.func(args)
    except LatticeGenomeError as exc:
        print(f"latticegenome: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        from latticegenome.core.fsutil import is_no_space

        if not is_no_space(exc):
            raise
        print(f"latticegenome: error: {getattr(exc, 'filename', None) or 'output'}: "
              "no space left on device", file=sys.stderr, flush=True)
        os._exit(1)  # not through interpreter exit: HDF5 may crash there after a failed write


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["FIELD_OPTIONS", "FieldOption", "add_field_option", "build_parser", "field_type", "main",
           "refuse_overwrite"]
