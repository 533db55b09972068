"""Real experimental images shipped inside PyPI wheels, read as data only.

The wheels are GPL-3 packages (atomap, temul-toolkit): they are never
installed or imported. ``pip download --no-deps`` fetches the wheel into a
cache (``$LATTICEGENOME_WHEEL_CACHE``, default ``~/.cache/latticegenome/wheels``)
and the image files are extracted from the zip. Tests call :func:`wheel_file`
through a fixture that skips with the reason when the registry cannot be
reached; benchmarks call it directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

#: (package, version) -> the image files used, inside the wheel.
WHEELS = {
    ("atomap", "0.4.2"): (
        "atomap/tests/datasets/test_ADF_cropped.hdf5",
        "atomap/tests/datasets/test_ABF_cropped.hdf5",
    ),
    ("temul-toolkit", "0.1.9"): (
        "temul/example_data/experimental/example_Se_implanted_MoS2.dm3",
        "temul/example_data/experimental/example_Au_nanoparticle.emd",
    ),
}


class RegistryUnavailable(RuntimeError):
    """The package registry could not be reached (the reason is the message)."""


def cache_dir() -> Path:
    return Path(os.environ.get("LATTICEGENOME_WHEEL_CACHE",
                               Path.home() / ".cache" / "latticegenome" / "wheels"))


def _wheel(package: str, version: str) -> Path:
    where = cache_dir()
    stem = package.replace("-", "_")
    found = sorted(where.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    where.mkdir(parents=True, exist_ok=True)
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                          f"{package}=={version}", "-d", str(where)],
                         capture_output=True, text=True, timeout=600)
    found = sorted(where.glob(f"{stem}-{version}-*.whl"))
    if got.returncode != 0 or not found:
        raise RegistryUnavailable(f"pip download {package}=={version}: "
                                  f"{(got.stderr or got.stdout).strip()[-300:]}")
    return found[0]


def wheel_file(package: str, version: str, inner: str) -> Path:
    """The file ``inner`` of the wheel ``package==version``, extracted into the cache.

    Raises
    ------
    RegistryUnavailable
        When the wheel is not cached and pip cannot download it.
    """
    target = cache_dir() / f"{package}-{version}" / inner
    if target.is_file():
        return target
    with zipfile.ZipFile(_wheel(package, version)) as z:
        tmp = target.with_name(target.name + f".{os.getpid()}.part")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(z.read(inner))
        os.replace(tmp, target)
    return target


def atomap_image(kind: str) -> Path:
    """The atomap 0.4.2 SrTiO3 [110] crop: ``kind`` is ``"ADF"`` or ``"ABF"``
    (recorded simultaneously; 400 x 380 px; scale 0.009326 nm without a unit)."""
    return wheel_file("atomap", "0.4.2", f"atomap/tests/datasets/test_{kind}_cropped.hdf5")


#: The pixel size of the atomap crops (their axes say 0.009326 with no unit: nm).
ATOMAP_PIXEL_PM = 9.326
