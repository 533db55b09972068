import h5py
import numpy as np
import pytest
import tifffile
from dmfile import write_dm

from latticegenome.columns.readers import read_image
from latticegenome.core.errors import ImageReadError, PixelSizeError


@pytest.fixture
def image(rng):
    return rng.poisson(50, (40, 48)).astype(np.uint16)


def test_tiff_imagej_pixel_size(tmp_path, image):
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, image, imagej=True, resolution=(1 / 0.0195, 1 / 0.0195), metadata={"unit": "nm"})
    (img,) = read_image(p)
    assert img.pixel_size_source == "file"
    assert img.pixel_size_pm == pytest.approx(19.5, rel=1e-6)
    assert np.array_equal(img.data, image)


def test_tiff_ome_pixel_size(tmp_path, image):
    p = tmp_path / "a.ome.tif"
    tifffile.imwrite(p, image, ome=True, metadata={"PhysicalSizeX": 0.21, "PhysicalSizeXUnit": "Å",
                                                  "PhysicalSizeY": 0.21, "PhysicalSizeYUnit": "Å"})
    (img,) = read_image(p)
    assert img.pixel_size_pm == pytest.approx(21.0)


def test_tiff_resolution_in_centimetres(tmp_path, image):
    p = tmp_path / "a.tif"
    # 5e8 pixels per cm = 20 pm per pixel
    tifffile.imwrite(p, image, resolution=(5e8, 5e8), resolutionunit=3)
    (img,) = read_image(p)
    assert img.pixel_size_pm == pytest.approx(20.0)


def test_plain_tiff_needs_configured_pixel_size(tmp_path, image):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, image)
    with pytest.raises(PixelSizeError, match="plain.tif"):
        read_image(p)
    (img,) = read_image(p, pixel_size_pm=18.0)
    assert img.pixel_size_pm == 18.0 and img.pixel_size_source == "config"


@pytest.mark.parametrize("version", [3, 4])
def test_digitalmicrograph(tmp_path, image, version):
    p = tmp_path / f"a.dm{version}"
    write_dm(p, image, pixel_size=0.0195, unit="nm", version=version, voltage_v=300e3,
             microscope="Titan")
    (img,) = read_image(p)
    assert np.array_equal(img.data, image)
    assert img.pixel_size_pm == pytest.approx(19.5, rel=1e-6)
    assert img.metadata["voltage_kV"] == pytest.approx(300)
    assert img.metadata["microscope"] == "Titan"


def test_berkeley_emd(tmp_path, image):
    p = tmp_path / "a.emd"
    with h5py.File(p, "w") as f:
        f.attrs["version_major"] = 0
        f.attrs["version_minor"] = 2
        g = f.create_group("data/haadf")
        g.attrs["emd_group_type"] = 1
        # Berkeley EMD stores the array transposed: dim1 is x (as RosettaSciIO writes it)
        g.create_dataset("data", data=image.T)
        for k, n in ((1, image.shape[1]), (2, image.shape[0])):
            d = g.create_dataset(f"dim{k}", data=np.arange(n) * 0.02)
            d.attrs["name"] = ["x", "y"][k - 1]
            d.attrs["units"] = "nm"
    (img,) = read_image(p)
    assert np.array_equal(img.data, image)
    assert img.pixel_size_pm == pytest.approx(20.0)


def test_hdf5_dataset_and_attributes(tmp_path, image):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("scan/haadf", data=image)
        d.attrs["pixel_size"] = 0.25
        d.attrs["pixel_size_unit"] = "Å"
        f.create_dataset("scan/other", data=image)
    with pytest.raises(ImageReadError, match="hdf5_dataset"):
        read_image(p)
    (img,) = read_image(p, hdf5_dataset="scan/haadf")
    assert img.pixel_size_pm == pytest.approx(25.0)
    with pytest.raises(ImageReadError, match="no dataset 'nope'"):
        read_image(p, hdf5_dataset="nope")


def test_npy_with_config_pixel_size(tmp_path, image):
    p = tmp_path / "a.npy"
    np.save(p, image)
    (img,) = read_image(p, pixel_size_pm=20.0)
    assert img.pixel_size_source == "config"


def test_stack_frames_sum_align(tmp_path, rng):
    from latticegenome.columns.simulate import simulate_lattice

    base, _ = simulate_lattice((64, 64), rng=rng, noise=False)
    stack = np.stack([base, np.roll(base, 2, axis=1), np.roll(base, -1, axis=0)])
    p = tmp_path / "s.npy"
    np.save(p, stack)
    frames = read_image(p, pixel_size_pm=20.0, stack="frames")
    assert [f.frame for f in frames] == [0, 1, 2]
    (summed,) = read_image(p, pixel_size_pm=20.0, stack="sum")
    assert np.allclose(summed.data, stack.sum(axis=0))
    (aligned,) = read_image(p, pixel_size_pm=20.0, stack="align")
    # aligned frames add up to three times the first (away from wrapped edges)
    assert np.allclose(aligned.data[8:-8, 8:-8], 3 * base[8:-8, 8:-8], rtol=0.02, atol=1.0)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: np.save(p, np.full((32, 32), np.nan)), "NaN or infinite"),
        (lambda p: np.save(p, np.full((32, 32), 7.0)), "constant image"),
        (lambda p: np.save(p, np.ones((8, 32))), "too small"),
        (lambda p: np.save(p, np.ones((4, 4, 4, 4))), "2-D image"),
        (lambda p: p.write_bytes(b"not a numpy file"), "not an NPY file"),
    ],
    ids=["nan", "constant", "small", "4d", "garbage"],
)
def test_bad_images_name_the_file(tmp_path, make, match):
    p = tmp_path / "bad_one.npy"
    make(p)
    with pytest.raises(ImageReadError, match=match) as err:
        read_image(p, pixel_size_pm=20.0)
    assert "bad_one.npy" in str(err.value)


def test_truncated_tiff_and_unknown_suffix(tmp_path, image):
    p = tmp_path / "cut.tif"
    tifffile.imwrite(p, image)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="cut.tif"):
        read_image(p, pixel_size_pm=20.0)
    q = tmp_path / "x.jpg"
    q.write_bytes(b"\xff\xd8")
    with pytest.raises(ImageReadError, match="unknown image format"):
        read_image(q)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.tif")


SECRET = b"root:x:0:0:SECRET-hunter2:/root:/bin/bash\n"


def _leaks(text: str) -> list[str]:
    """Fragments of SECRET (4 bytes and more, as text, hex or integers) found in text."""
    found = []
    for k in range(len(SECRET) - 3):
        w = SECRET[k:k + 4]
        forms = {w.decode(), w.hex(), *(str(int.from_bytes(w, o)) for o in ("big", "little"))}
        found += [f for f in forms if f.strip() and f in text]
    return found


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".dm3", ".dm4", ".emd", ".h5", ".hdf5", ".npy", ".hspy", ".mrc", ".ser",
                                    "npy-header"])
def test_reader_errors_never_quote_file_contents(tmp_path, suffix):
    if suffix == "npy-header":  # an NPY magic with the secret in its header
        p = tmp_path / "x.npy"
        header = b"{'descr': '" + SECRET.strip() + b"', 'fortran_order': False, 'shape': (4, 4), }"
        p.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    else:
        p = tmp_path / f"x{suffix}"
        p.write_bytes(SECRET)
    with pytest.raises(ImageReadError) as err:
        read_image(p, pixel_size_pm=20.0)
    message = str(err.value)
    assert message.startswith(f"{p}: ") and "x." in message
    assert _leaks(err.value.reason) == [] and _leaks(message.replace(str(p), "")) == []
    assert len(err.value.reason) < 120 and "\n" not in message


def test_hdf5_dataset_listing_is_escaped(tmp_path, image):
    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("a\nb", data=image)
        f.create_dataset("c", data=image)
    with pytest.raises(ImageReadError, match="hdf5_dataset") as err:
        read_image(p)
    assert "\n" not in str(err.value) and "a\\nb" in str(err.value)


# --- the columns store: plain CSV with a JSON sidecar, HDF5 format version ----------------


def _some_columns(n=5):
    from latticegenome.columns.finder import Columns

    k = np.arange(n, dtype=float)
    site = np.array(["A", "B"] * (n // 2) + ["A"] * (n % 2))
    return Columns(x=10 + 20 * k, y=5 + k, site=site, species=np.where(site == "A", "Sr", "Ti"),
                   x_err=np.full(n, 0.05), y_err=np.full(n, 0.06), amplitude=100 + k,
                   amplitude_err=np.full(n, 1.0), background=np.full(n, 20.0),
                   sigma=np.full(n, 2.0), i=np.arange(n), j=np.zeros(n, int),
                   converged=np.ones(n, bool), detected=np.ones(n, bool),
                   significance=np.full(n, 100.0), basis=np.array([[20.0, 0.0], [0.0, 20.5]]),
                   origin=np.zeros(2), dispersion=1.0)


def test_columns_csv_is_plain_with_a_json_sidecar(tmp_path):
    import csv
    import json

    from latticegenome.columns.store import (
        CSV_FIELDS,
        csv_sidecar,
        read_columns,
        write_columns_csv,
    )

    out = tmp_path / "cols.csv"
    cols = _some_columns()
    write_columns_csv(out, cols, pixel_size_pm=19.5, source="raw/µ.tif")
    assert out.read_text().splitlines()[0] == ",".join(CSV_FIELDS)
    with open(out, newline="") as fh:  # the defaults see the header
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and tuple(rows[0]) == CSV_FIELDS and rows[1]["site"] == "B"
    try:
        import pandas
    except ImportError:
        pandas = None
    if pandas is not None:
        frame = pandas.read_csv(out)
        assert tuple(frame.columns) == CSV_FIELDS and np.allclose(frame["x"], cols.x)
    assert csv_sidecar(out) == tmp_path / "cols.csv.json"
    meta = json.loads(csv_sidecar(out).read_text(encoding="utf-8"))
    assert meta["source"] == "raw/µ.tif" and meta["pixel_size_pm"] == 19.5
    assert meta["basis_px"] == [[20.0, 0.0], [0.0, 20.5]] and meta["format_version"] == 1
    assert meta["units"].startswith("px")
    back, attrs = read_columns(out)
    assert attrs["pixel_size_pm"] == 19.5 and attrs["source"] == "raw/µ.tif"
    assert np.array_equal(attrs["basis_px"], cols.basis) and attrs["format_version"] == 1
    assert np.allclose(back["x"], cols.x, atol=1e-6) and list(back["site"]) == list(cols.site)
    assert back["i"].dtype == np.int64 and back["converged"].all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cols.csv", "cols.csv.json"]  # no temporaries


def test_columns_csv_without_sidecar_or_with_old_comments(tmp_path):
    from latticegenome.columns.store import read_columns_csv, write_columns_csv

    out = tmp_path / "cols.csv"
    write_columns_csv(out, _some_columns(), pixel_size_pm=None)
    assert "pixel_size_pm" not in read_columns_csv(out)[1]  # unknown: null in the sidecar
    write_columns_csv(out, _some_columns(), pixel_size_pm=20.0)
    (tmp_path / "cols.csv.json").unlink()
    cols, attrs = read_columns_csv(out)
    assert len(cols["x"]) == 5 and "pixel_size_pm" not in attrs and attrs["format_version"] == 1
    old = tmp_path / "old.csv"  # written before the sidecar: leading comment lines
    old.write_text("# source: a.tif\n# pixel_size_pm: 18.5\n# basis_px: [[20, 0], [0, 20]]\n"
                   "# units: px\nx,y,site\n1,2,A\n3,4,B\n")
    cols, attrs = read_columns_csv(old)
    assert attrs["pixel_size_pm"] == 18.5 and attrs["source"] == "a.tif" and list(cols["site"]) == ["A", "B"]
    (tmp_path / "old.csv.json").write_text("{not json")
    with pytest.raises(ImageReadError, match="old.csv.json: the metadata sidecar is not JSON"):
        read_columns_csv(old)
    (tmp_path / "old.csv.json").write_text('{"format_version": 99}')
    with pytest.raises(ImageReadError, match="format version 99"):
        read_columns_csv(old)


def test_columns_h5_format_version(tmp_path):
    from latticegenome.columns.store import (
        FORMAT_VERSION,
        read_columns,
        write_columns_h5,
    )

    p = tmp_path / "c.h5"
    write_columns_h5(p, _some_columns(), source="a.tif", pixel_size_pm=20.0)
    with h5py.File(p, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 1
    assert read_columns(p)[1]["format_version"] == 1
    with h5py.File(p, "a") as f:  # written before the attribute: version 1
        del f.attrs["format_version"]
    cols, attrs = read_columns(p)
    assert attrs["format_version"] == 1 and len(cols["x"]) == 5
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ImageReadError, match="c.h5: column file format version 2"):
        read_columns(p)


# --- formats through RosettaSciIO, with their own writers, and a real HyperSpy file --------

def _hyperspy_signal(data, scale_nm, units="nm"):
    axes = [{"name": n, "size": data.shape[k], "scale": scale_nm, "offset": 0.0, "units": units,
             "navigate": False} for k, n in enumerate("yx")]
    return {"data": data, "axes": axes, "original_metadata": {}, "attributes": {"_lazy": False},
            "metadata": {"General": {"title": "HAADF"}, "Signal": {"signal_type": ""},
                         "Acquisition_instrument": {"TEM": {
                             "beam_energy": 300.0, "microscope": "Titan", "convergence_angle": 21.4,
                             "Stage": {"tilt_alpha": 1.5},
                             "Detector": {"HAADF": {"inner_collection_angle": 70.0}}}}},
            "tmp_parameters": {}, "learning_results": {}, "models": {},
            "package_info": {"name": "latticegenome tests", "version": "0"}}


@pytest.mark.parametrize("suffix", [".hspy", ".h5"])
def test_hyperspy_files_give_their_pixel_size_and_instrument(tmp_path, suffix):
    """A HyperSpy file written by RosettaSciIO's own writer (.hspy was refused as an
    unknown format; a HyperSpy-written .h5 was read without its pixel size)."""
    from rsciio.hspy import file_writer

    from latticegenome.columns.readers import read_image

    data = np.random.default_rng(0).poisson(50, (64, 80)).astype("float32")
    written = tmp_path / "scan.hspy"
    file_writer(str(written), _hyperspy_signal(data, 0.0195))
    path = written.rename(tmp_path / f"scan{suffix}")
    (img,) = read_image(path)
    assert img.pixel_size_source == "file" and img.pixel_size_pm == pytest.approx(19.5)
    assert np.array_equal(img.data, data)
    md = img.metadata
    assert md["voltage_kV"] == 300.0 and md["microscope"] == "Titan"
    assert md["convergence_angle_mrad"] == 21.4 and md["stage_tilt_alpha_deg"] == 1.5
    assert md["haadf_inner_collection_angle_mrad"] == 70.0


def test_a_scale_without_a_unit_is_never_taken_as_the_pixel_size(tmp_path):
    from rsciio.hspy import file_writer

    from latticegenome.columns.readers import read_image
    from latticegenome.core.errors import PixelSizeError

    data = np.random.default_rng(1).poisson(50, (64, 64)).astype("float32")
    file_writer(str(tmp_path / "x.hspy"), _hyperspy_signal(data, 0.0093, units="<undefined>"))
    with pytest.raises(PixelSizeError, match=r"scale of 0.0093 but no length unit"):
        read_image(tmp_path / "x.hspy")
    (img,) = read_image(tmp_path / "x.hspy", pixel_size_pm=9.3)
    assert img.pixel_size_source == "config" and img.metadata["axes_scale_without_unit"] == 0.0093


def test_mrc_and_unknown_plugins_say_what_they_need(tmp_path):
    from latticegenome.columns.readers import read_image
    from latticegenome.core.errors import ImageReadError

    (tmp_path / "x.mrc").write_bytes(b"\0" * 64)
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "x.mrc", pixel_size_pm=20)
    assert "x.mrc" in str(err.value) and "Traceback" not in str(err.value)


@pytest.fixture(scope="module")
def atomap_datasets():
    """The real SrTiO3 [110] images shipped in the atomap 0.4.2 wheel (GPL code: read as
    data only, never imported), fetched with pip download; skipped without a registry."""
    from wheeldata import RegistryUnavailable, atomap_image

    try:
        return atomap_image("ADF").parent if atomap_image("ABF") else None
    except RegistryUnavailable as exc:
        pytest.skip(f"the package registry cannot be reached: {exc}")


@pytest.mark.slow
def test_real_hyperspy_images_from_atomap_are_read_as_hyperspy(atomap_datasets):
    """Real HyperSpy-written HDF5 (ADF and ABF recorded together): read through
    RosettaSciIO; their axes carry a scale without a unit, which is said, not guessed."""
    from latticegenome.columns.readers import read_image
    from latticegenome.core.errors import PixelSizeError

    for name in ("test_ADF_cropped.hdf5", "test_ABF_cropped.hdf5"):
        with pytest.raises(PixelSizeError, match="no length unit"):
            read_image(atomap_datasets / name)
        (img,) = read_image(atomap_datasets / name, pixel_size_pm=9.33)
        assert img.data.shape == (400, 380) and img.data.std() > 0
        assert img.metadata["axes_scale_without_unit"] == pytest.approx(0.009326, rel=1e-3)


# --- several signals in one file, vendor metadata, real vendor images (issue 16) ----------

_VELOX_OPERATIONS = {  # how Velox records where each kind of image came from
    "HAADF": "StemInputOperation", "ABF": "StemInputOperation", "DF4": "StemInputOperation",
    "DPC": "DpcOperation", "iDPC": "SurfaceReconstructionOperation",
}
_VELOX_DETECTORS = {"HAADF": ("0.070", "0.200"), "ABF": ("0.011", "0.022"), "DF4": ("0.025", "0.070")}


def _velox_metadata(detector, pixel_m):
    """The per-image metadata of a Velox EMD (strings in SI units, as Velox writes them)."""
    names = list(_VELOX_DETECTORS)
    source = detector if detector in names else "DF4"  # DPC/iDPC are computed from DF4 segments
    return {
        "Core": {"MetadataDefinitionVersion": "7.9", "MetadataSchemaVersion": "v1/2013/07"},
        "Instrument": {"Manufacturer": "FEI Company", "InstrumentClass": "Titan"},
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1565710322"}},
        "Optics": {"AccelerationVoltage": "300000", "BeamConvergence": "0.0214",
                   "CameraLength": "0.115"},
        "Stage": {"AlphaTilt": "0.0174532925199", "BetaTilt": "-0.00872664626",
                  "Position": {"x": "1e-06", "y": "2e-06", "z": "0"}},
        "Scan": {"DwellTime": "2e-06", "FrameTime": "8.2"},
        "Detectors": {f"Detector-{k}": {"DetectorName": n, "DetectorType": "ScanningDetector",
                                        "CollectionAngleRange": {"begin": a, "end": b}}
                      for k, (n, (a, b)) in enumerate(_VELOX_DETECTORS.items())},
        "BinaryResult": {"Detector": source, "DetectorIndex": str(names.index(source)),
                         "PixelSize": {"width": repr(pixel_m), "height": repr(pixel_m)},
                         "PixelUnitX": "m", "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"}},
        "CustomProperties": {"StemMagnification": {"type": "double", "value": "3.6e+006"}},
    }


def _velox_emd(path, images, pixel_m=2.0e-11, spectrum_image=False):
    """A Velox EMD (format "Velox", version 7: the layout of the real file in the
    temul-toolkit wheel) holding ``images``, a list of (detector, array); DPC images
    are stored complex, as Velox stores them. RosettaSciIO has no Velox writer."""
    import json

    text = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=[json.dumps({"version": "7", "format": "Velox"})], dtype=text)
        for k, (detector, arr) in enumerate(images):
            uid = f"{k:02d}" + "ab" * 15  # groups are listed in name order: the order given here
            g = f.create_group(f"Data/Image/{uid}")
            if detector == "DPC":
                stored = np.zeros(arr.shape + (1,), dtype=[("realFloat", "<f4"), ("imagFloat", "<f4")])
                stored["realFloat"][..., 0], stored["imagFloat"][..., 0] = arr, arr[::-1]
            else:
                stored = arr[..., None]
            g.create_dataset("Data", data=stored)
            meta = np.frombuffer(json.dumps(_velox_metadata(detector, pixel_m)).encode(), np.uint8)
            g.create_dataset("Metadata", data=meta[:, None])
            op = {"dataPath": f"/Data/Image/{uid}", "detector": detector,
                  "integrationMode": "true", "enableFilter": "false"}
            f.create_dataset(f"Operations/{_VELOX_OPERATIONS[detector]}/{k:02d}", data=[json.dumps(op)],
                             dtype=text)
        if spectrum_image:  # a stub: where Velox keeps the EDS stream, and the image labels
            f.create_group("Data/SpectrumImage/" + "cd" * 16)
            for k, (detector, _) in enumerate(images):
                label = {"dataPath": f"/Data/Image/{k:02d}" + "ab" * 15, "display": {"label": detector}}
                f.create_dataset(f"Presentation/Displays/ImageDisplay/{k:02d}", data=[json.dumps(label)],
                                 dtype=text)


@pytest.fixture
def four_images(rng):
    return {name: rng.poisson(lam, shape).astype(np.uint16)
            for name, lam, shape in (("ABF", 900, (80, 96)), ("DPC", 40, (64, 64)),
                                     ("iDPC", 60, (64, 64)), ("HAADF", 120, (64, 64)))}


def test_velox_haadf_is_chosen_among_abf_and_dpc_with_its_instrument(tmp_path, four_images):
    p = tmp_path / "scan.emd"
    _velox_emd(p, list(four_images.items()))
    (img,) = read_image(p)
    assert np.array_equal(img.data, four_images["HAADF"])  # not the first, nor the largest (ABF)
    assert img.pixel_size_source == "file" and img.pixel_size_pm == pytest.approx(20.0)
    md = img.metadata
    assert md["signal"] == "HAADF" and md["signals"] == ["ABF", "DPC", "iDPC", "HAADF"]
    assert md["signal_choice"] == ("HAADF chosen by its title of 4 signals: "
                                   "ABF, DPC (complex image), iDPC, HAADF")
    assert md["detector"] == "HAADF" and md["microscope"] == "Titan"
    assert md["voltage_kV"] == pytest.approx(300) and md["convergence_angle_mrad"] == pytest.approx(21.4)
    assert md["detector_inner_angle_mrad"] == pytest.approx(70)
    assert md["detector_outer_angle_mrad"] == pytest.approx(200)
    assert md["dwell_time_us"] == pytest.approx(2.0) and md["magnification"] == pytest.approx(3.6e6)
    assert md["stage_tilt_alpha_deg"] == pytest.approx(1.0) and md["stage_tilt_beta_deg"] == pytest.approx(-0.5)
    assert md["acquisition_time"] == "2019-08-13T15:32:02+00:00" and md["camera_length_mm"] == pytest.approx(115)


def test_velox_signal_by_name_or_a_clear_no(tmp_path, four_images):
    p = tmp_path / "scan.emd"
    _velox_emd(p, list(four_images.items()))
    (abf,) = read_image(p, signal="abf")
    assert np.array_equal(abf.data, four_images["ABF"]) and abf.metadata["signal"] == "ABF"
    assert abf.metadata["detector_inner_angle_mrad"] == pytest.approx(11)
    assert abf.metadata["signal_choice"].startswith("ABF chosen by its title as configured (signal: abf)")
    with pytest.raises(ImageReadError, match=r"scan.emd: no signal titled 'BF'.*ABF, DPC \(complex image\), "
                                             r"iDPC, HAADF"):
        read_image(p, signal="BF")
    with pytest.raises(ImageReadError, match="signal 'DPC' is a complex image, not a 2-D image"):
        read_image(p, signal="DPC")


def test_velox_without_haadf_takes_df_and_never_a_computed_image(tmp_path, four_images):
    p = tmp_path / "df.emd"
    _velox_emd(p, [("ABF", four_images["ABF"]), ("iDPC", four_images["iDPC"]), ("DF4", four_images["HAADF"])])
    (img,) = read_image(p)
    assert img.metadata["signal"] == "DF4" and np.array_equal(img.data, four_images["HAADF"])
    q = tmp_path / "bright.emd"  # the iDPC's source detector is DF4: it must not count as DF
    _velox_emd(q, [("ABF", four_images["ABF"]), ("iDPC", four_images["iDPC"])])
    with pytest.raises(ImageReadError, match=r"2 images and none is HAADF, ADF or DF.*ABF, iDPC"):
        read_image(q)
    (idpc,) = read_image(q, signal="iDPC")
    assert np.array_equal(idpc.data, four_images["iDPC"])


def test_velox_with_a_spectrum_image_needs_sparse_or_is_read(tmp_path, four_images):
    import importlib.util

    p = tmp_path / "eds.emd"
    _velox_emd(p, [("HAADF", four_images["HAADF"])], spectrum_image=True)
    if importlib.util.find_spec("sparse") is not None:  # a dependency: the usual case
        (img,) = read_image(p)
        assert img.metadata["signal"] == "HAADF" and np.array_equal(img.data, four_images["HAADF"])
        return
    with pytest.raises(ImageReadError, match=r"eds.emd: this EMD file holds a spectrum image.*pip install sparse"):
        read_image(p)


def _dm_several(path, entries, version=4):
    """A DM file holding several images (the layout of tests/dmfile.py, one ImageList
    entry per image). ``entries``: (name, array, [(scale, unit) per DM axis, x first],
    ImageTags as a nested dict)."""
    import struct

    from dmfile import _IMAGE_TYPE, _SCALAR, _Writer

    w = _Writer(version)

    def tags(name, d):
        out = []
        for k, v in d.items():
            if isinstance(v, dict):
                out.append(tags(k, v))
            elif isinstance(v, str):
                out.append(w.string(k, v))
            else:
                out.append(w.scalar(k, v, "float64" if isinstance(v, float) else "int32"))
        return w.group(name, out)

    listed = []
    for name, arr, calibration, image_tags in entries:
        flat = arr.ravel()
        data = w.data_tag("Data", [20, _SCALAR[arr.dtype], flat.size],
                          flat.astype(arr.dtype.newbyteorder("<")).tobytes())
        dims = w.group("Dimensions", [w.scalar("", n, "uint32") for n in arr.shape[::-1]])
        cal = w.group("Dimension", [w.group("", [w.scalar("Origin", 0.0, "float32"),
                                                 w.scalar("Scale", s, "float32"), w.string("Units", u)])
                                    for s, u in calibration])
        bright = w.group("Brightness", [w.scalar("Origin", 0.0, "float32"), w.scalar("Scale", 1.0, "float32"),
                                        w.string("Units", "counts")])
        image_data = w.group("ImageData", [w.group("Calibrations", [bright, cal]), data,
                                           w.scalar("DataType", _IMAGE_TYPE[arr.dtype], "int32"), dims,
                                           w.scalar("PixelDepth", arr.dtype.itemsize, "int32")])
        listed.append(w.group("", [image_data, tags("ImageTags", image_tags), w.string("Name", name)]))
    root = w.group("", [w.group("ImageList", listed)], root=True)
    header = struct.pack(">l", version) + w.n(len(root) + 16) + struct.pack(">l", 1)
    path.write_bytes(header + root + b"\x00" * 8)


def test_dm_with_spectra_and_several_images_gives_the_haadf(tmp_path, rng):
    haadf = rng.poisson(80, (40, 48)).astype(np.float32)
    abf = rng.poisson(800, (56, 64)).astype(np.float32)
    spectrum = rng.poisson(30, 256).astype(np.float32)
    cube = rng.poisson(5, (128, 20, 24)).astype(np.float32)  # (energy, y, x)
    nm, ev = (0.0196, "nm"), (0.25, "eV")
    instrument = {"Microscope Info": {"Voltage": 200000.0, "Indicated Magnification": 8.0e6,
                                      "Name": "ARM200F", "Illumination Mode": "STEM",
                                      "Stage Position": {"Stage Alpha": 2.5, "Stage Beta": -1.0}},
                  "DigiScan": {"Sample Time": 4.0},
                  "DataBar": {"Acquisition Date": "3/7/2016", "Acquisition Time": "6:20:54 PM"}}
    p = tmp_path / "survey.dm4"
    _dm_several(p, [
        ("EELS Spectrum", spectrum, [ev], {"Meta Data": {"Format": "Spectrum", "Signal": "EELS"}}),
        ("ABF", abf, [nm, nm], {}),
        ("HAADF", haadf, [nm, nm], instrument),
        ("EELS Spectrum Image", cube, [nm, nm, ev],
         {"Meta Data": {"Format": "Spectrum image", "Signal": "EELS"}}),
    ])
    (img,) = read_image(p)
    assert np.array_equal(img.data, haadf) and img.pixel_size_pm == pytest.approx(19.6, rel=1e-6)
    md = img.metadata
    assert md["signals"] == ["EELS Spectrum", "ABF", "HAADF", "EELS Spectrum Image"]
    assert md["signal_choice"] == ("HAADF chosen by its title of 4 signals: EELS Spectrum (spectrum), "
                                   "ABF, HAADF, EELS Spectrum Image (spectrum image)")
    assert md["voltage_kV"] == pytest.approx(200) and md["microscope"] == "ARM200F"
    assert md["magnification"] == pytest.approx(8e6) and md["dwell_time_us"] == pytest.approx(4.0)
    assert md["stage_tilt_alpha_deg"] == 2.5 and md["stage_tilt_beta_deg"] == -1.0
    assert md["acquisition_time"] == "2016-03-07T18:20:54"
    with pytest.raises(ImageReadError, match="'EELS Spectrum Image' is a spectrum image, not a 2-D image"):
        read_image(p, signal="EELS Spectrum Image")
    (abf_img,) = read_image(p, signal="ABF")
    assert np.array_equal(abf_img.data, abf)


def test_dm_spectra_only_is_a_clear_no(tmp_path, rng):
    p = tmp_path / "eels.dm3"
    _dm_several(p, [("EELS", rng.poisson(30, 256).astype(np.float32), [(0.25, "eV")],
                     {"Meta Data": {"Format": "Spectrum", "Signal": "EELS"}})], version=3)
    with pytest.raises(ImageReadError, match=r"eels.dm3: the file holds no 2-D image \(found 1: EELS \(spectrum\)\)"):
        read_image(p, pixel_size_pm=20)


def test_signal_is_checked_against_hyperspy_titles_and_ignored_for_unnamed_images(tmp_path, image):
    from rsciio.hspy import file_writer

    data = image.astype("float32")
    sig = _hyperspy_signal(data, 0.02)
    sig["metadata"]["General"]["title"] = "ABF"
    del sig["metadata"]["Acquisition_instrument"]["TEM"]["Detector"]  # else named HAADF by its detector
    file_writer(str(tmp_path / "abf.hspy"), sig)
    (img,) = read_image(tmp_path / "abf.hspy")
    assert img.metadata["signal_choice"] == "ABF chosen as the only signal in the file"
    with pytest.raises(ImageReadError, match=r"abf.hspy: no signal titled 'HAADF'.*holds 1: ABF"):
        read_image(tmp_path / "abf.hspy", signal="HAADF")
    np.save(tmp_path / "a.npy", image)  # one unnamed image: nothing to check the name against
    (img,) = read_image(tmp_path / "a.npy", pixel_size_pm=20.0, signal="HAADF")
    assert np.array_equal(img.data, image) and "signal" not in img.metadata


def test_fei_thermo_tiff_pixel_size_and_instrument(tmp_path, image):
    """An FEI/Thermo TIFF: its INI-style header in tag 34682 (written with tifffile,
    read by tifffile's own FEI parser through RosettaSciIO)."""
    header = """[User]
Date=12/04/2019
Time=10:34:12 AM
[Beam]
HV=300000
Beam=EBeam
ScanRotation=1.5707963
[Scan]
InternalScan=1
Dwelltime=3e-06
PixelWidth=1.95e-11
PixelHeight=1.95e-11
[Stage]
StageX=0.001
StageT=0.0174532925199
StageTb=0
[Detectors]
Number=1
Name=STEM3
Mode=HAADF
[System]
SystemType=Spectra Ultra
""".replace("\n", "\r\n")
    p = tmp_path / "fei.tif"
    tifffile.imwrite(p, image, extratags=[(34682, "s", 0, header, True)])
    (img,) = read_image(p)
    assert img.pixel_size_source == "file" and img.pixel_size_pm == pytest.approx(19.5)
    md = img.metadata
    assert md["tiff_vendor"] == "FEI/Thermo" and md["microscope"] == "Spectra Ultra"
    assert md["voltage_kV"] == pytest.approx(300) and md["dwell_time_us"] == pytest.approx(3.0)
    assert md["stage_tilt_alpha_deg"] == pytest.approx(1.0) and md["stage_tilt_beta_deg"] == 0
    assert md["detector"] == "STEM3 HAADF" and md["acquisition_time"] == "2019-12-04T10:34:12"
    assert md["scan_rotation_deg"] == pytest.approx(90.0, abs=1e-4)  # [Beam] ScanRotation, rad


def test_zeiss_tiff_pixel_size_and_instrument(tmp_path, image):
    """A Zeiss SEM TIFF (CZ_SEM tag 34118, its text layout; the 4th unnamed value is
    the pixel size in m for a 1024-px-wide display)."""
    cz = "\r\n".join(["0", "0", "0", repr(2.0e-11 * image.shape[1] / 1024), "AP_ACTUALKV", "EHT = 30.00 kV",
                      "DP_DWELL_TIME", "Dwell Time = 3.0 µs", "AP_MAG", "Mag = 5.00 M X",
                      "AP_DATE", "Date :2 Jan 2020", "AP_TIME", "Time :10:34:12",
                      "DP_DETECTOR_TYPE", "Detector = aSTEM", ""]).encode("latin-1")
    p = tmp_path / "zeiss.tif"
    tifffile.imwrite(p, image, extratags=[(34118, "B", len(cz), cz, True)])
    (img,) = read_image(p)
    assert img.pixel_size_pm == pytest.approx(20.0)
    md = img.metadata
    assert md["tiff_vendor"] == "Zeiss" and md["voltage_kV"] == 30.0 and md["magnification"] == 5e6
    assert md["dwell_time_us"] == pytest.approx(3.0) and md["detector"] == "aSTEM"
    assert md["acquisition_time"] == "2020-01-02T10:34:12"


def test_dm_tiff_written_by_rosettasciio(tmp_path, image):
    """RosettaSciIO's TIFF writer puts the calibration in DigitalMicrograph tags
    (65003-65010) and an ImageJ description; the DM tags give the pixel size."""
    from rsciio.tiff import file_writer

    sig = _hyperspy_signal(image, 0.0215)
    sig["metadata"]["General"].update(date="2021-05-06", time="07:08:09")
    file_writer(str(tmp_path / "dm.tif"), sig)
    (img,) = read_image(tmp_path / "dm.tif")
    assert img.pixel_size_pm == pytest.approx(21.5) and img.metadata["tiff_vendor"] == "DigitalMicrograph"
    assert img.metadata["acquisition_time"] == "2021-05-06T07:08:09"
    assert np.array_equal(img.data, image)


@pytest.fixture(scope="module")
def temul_images():
    """The real experimental images shipped in the temul-toolkit 0.1.9 wheel (GPL code:
    read as data only, never imported), fetched with pip download; skipped without a registry."""
    from wheeldata import RegistryUnavailable, wheel_file

    base = "temul/example_data/experimental/"
    try:
        return {kind: wheel_file("temul-toolkit", "0.1.9", base + name) for kind, name in
                (("dm3", "example_Se_implanted_MoS2.dm3"), ("emd", "example_Au_nanoparticle.emd"))}
    except RegistryUnavailable as exc:
        pytest.skip(f"the package registry cannot be reached: {exc}")


def test_real_velox_emd_from_temul(temul_images):
    """A real Velox EMD (Titan, 300 kV, HAADF, Au nanoparticle): 2048 x 2048 px of
    7.4984 pm, with the instrument record Velox wrote."""
    (img,) = read_image(temul_images["emd"])
    assert img.data.shape == (2048, 2048) and img.data.std() > 0
    assert img.pixel_size_source == "file" and img.pixel_size_pm == pytest.approx(7.4984, abs=1e-4)
    md = img.metadata
    assert md["signal"] == "HAADF" and md["signal_choice"] == "HAADF chosen as the only signal in the file"
    assert md["microscope"] == "Titan" and md["manufacturer"] == "FEI Company"
    assert md["voltage_kV"] == pytest.approx(300) and md["detector"] == "HAADF"
    assert md["convergence_angle_mrad"] == pytest.approx(17.90, abs=0.01)
    assert md["detector_inner_angle_mrad"] == pytest.approx(41.23, abs=0.01)
    assert md["detector_outer_angle_mrad"] == pytest.approx(247.52, abs=0.01)
    assert md["dwell_time_us"] == pytest.approx(2.5) and md["magnification"] == pytest.approx(5.1e6)
    assert md["acquisition_time"] == "2019-08-13T15:32:02+00:00"
    assert md["stage_tilt_alpha_deg"] == pytest.approx(0.0107, abs=1e-4) and md["stage_tilt_beta_deg"] == 0
    assert md["camera_length_mm"] == pytest.approx(182.9)


def test_real_dm3_spectrum_image_survey_from_temul(temul_images):
    """A real DM3 (an SI survey image, HAADF by its detector tag, 60 kV): 1024 x 1024 px
    of 0.0126953125 nm."""
    (img,) = read_image(temul_images["dm3"])
    assert img.data.shape == (1024, 1024) and img.data.std() > 0
    assert img.pixel_size_pm == pytest.approx(12.6953125) and img.pixel_size_source == "file"
    md = img.metadata
    assert md["signal"] == "SI Survey Image (active)" and md["detector"] == "HAADF"
    assert md["voltage_kV"] == pytest.approx(60) and md["dwell_time_us"] == pytest.approx(32.4)
    assert md["magnification"] == 1000 and md["acquisition_time"] == "2016-07-03T18:20:54"
    (named,) = read_image(temul_images["dm3"], signal="HAADF")
    assert named.metadata["signal_choice"].startswith("SI Survey Image (active) chosen by its detector name")
    with pytest.raises(ImageReadError, match=r"no signal titled 'ABF'.*SI Survey Image \(active\)"):
        read_image(temul_images["dm3"], signal="ABF")
