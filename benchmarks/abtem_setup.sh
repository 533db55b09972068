#!/usr/bin/env bash
# Creates .venv-abtem/ at the repository root: a separate virtual environment for the
# multislice simulations of benchmarks/abtem_images.py (abTEM and its dependencies never
# go into the project's own .venv). Add `/.venv-abtem/` to .gitignore.
#
#   bash benchmarks/abtem_setup.sh
#   OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv-abtem/bin/python benchmarks/abtem_images.py --out tests/data/abtem
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv-abtem/bin/python ]; then
    "$PY" -m venv .venv-abtem
fi
.venv-abtem/bin/pip install --upgrade pip
.venv-abtem/bin/pip install abtem==1.0.11 ase==3.29.0 pyfftw==0.15.1 matplotlib==3.11.2
.venv-abtem/bin/python -c "import abtem, ase, pyfftw; print('abtem', abtem.__version__, 'ase', ase.__version__, 'pyfftw', pyfftw.__version__)"
