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


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".dm3", ".dm4", ".emd", ".h5", ".hdf5", ".npy",
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
