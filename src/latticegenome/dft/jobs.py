"""custodian jobs and handlers of our own, for CP2K and VASP.

- :class:`OwnCp2kJob` and :class:`OwnVaspJob`: the upstream jobs, started in
  the job directory (``cwd=``) with the environment the caller gives them
  (``env``: overrides of this process's environment, passed to ``Popen``;
  this process's own environment is never changed), in a session of their
  own; ``OwnCp2kJob.terminate()`` stops only that session.
- :class:`MaxScfHandler`: SCF not converged within MAX_SCF: more iterations.
- :class:`Cp2kStdErrHandler`: custodian's CP2K stderr handler, reading the
  stderr file in the directory it is given (upstream reads it relative to the
  current working directory).

Importing this module imports custodian; :mod:`latticegenome.dft.calculations`
imports it only when a calculation runs.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from shutil import which

from custodian.cp2k.handlers import StdErrHandler
from custodian.cp2k.jobs import Cp2kJob
from custodian.custodian import ErrorHandler
from custodian.vasp.jobs import VaspJob, _gamma_point_only_check
from pymatgen.io.vasp.inputs import VaspInput

from latticegenome.dft.stopping import stop_session

log = logging.getLogger(__name__)


def child_env(overrides: dict[str, str] | None) -> dict[str, str] | None:
    """The environment of a launched process: this one's with ``overrides``.

    ``None`` without overrides (``Popen`` then inherits the environment).

    Examples
    --------
    >>> child_env({"OMP_NUM_THREADS": "1"})["OMP_NUM_THREADS"]
    '1'
    >>> child_env(None) is None
    True
    """
    return {**os.environ, **overrides} if overrides else None


class OwnCp2kJob(Cp2kJob):
    """custodian's Cp2kJob that only ever stops its own process group.

    Upstream ``terminate()`` runs ``killall cp2k...``, which kills every
    CP2K on the node, other jobs' included; this one ends the session of
    the run (:func:`~latticegenome.dft.stopping.stop_session`). ``env``
    (set on the instance, so that custodian's record of the job stays the
    upstream one): overrides of the environment for the launched process.
    """

    _proc = None
    env: dict[str, str] | None = None

    def run(self, directory="./"):
        cmd = [*self.cp2k_cmd, "-i", self.input_file]
        with open(os.path.join(directory, self.output_file), "w") as out, \
                open(os.path.join(directory, self.stderr_file), "w", buffering=1) as err:
            self._proc = subprocess.Popen(cmd, cwd=directory, stdout=out, stderr=err,
                                          env=child_env(self.env), start_new_session=True)
        return self._proc

    def terminate(self, directory="./"):
        if self._proc is not None:
            stop_session(self._proc)  # MPI ranks too: not in mpirun's process group


class OwnVaspJob(VaspJob):
    """custodian's VaspJob started with ``env`` (set on the instance, as for
    :class:`OwnCp2kJob`): overrides of the environment for the launched process."""

    env: dict[str, str] | None = None

    def run(self, directory="./"):
        cmd = list(self.vasp_cmd)
        if self.auto_gamma and _gamma_point_only_check(VaspInput.from_directory(directory)):
            if self.gamma_vasp_cmd is not None and which(self.gamma_vasp_cmd[-1]):
                cmd = self.gamma_vasp_cmd
            elif which(cmd[-1] + ".gamma"):
                cmd[-1] += ".gamma"
        log.info("Running %s", " ".join(cmd))
        with open(os.path.join(directory, self.output_file), "w") as out, \
                open(os.path.join(directory, self.stderr_file), "w", buffering=1) as err:
            self._vasp_process = subprocess.Popen(cmd, cwd=directory, stdout=out, stderr=err,
                                                  env=child_env(self.env),
                                                  start_new_session=True)
        return self._vasp_process


class MaxScfHandler(ErrorHandler):
    """SCF not converged within MAX_SCF: allow more iterations (check, then correct).

    custodian's own SCF handler changes the mixing but never raises
    MAX_SCF; this one multiplies it by ``factor`` up to ``limit``.
    """

    is_monitor = False

    def __init__(self, input_file="cp2k.inp", output_file="cp2k.out", factor=4, limit=400):
        self.input_file, self.output_file = input_file, output_file
        self.factor, self.limit = factor, limit

    def _max_scf(self, directory):
        from pymatgen.io.cp2k.inputs import Cp2kInput

        inp = Cp2kInput.from_file(os.path.join(directory, self.input_file))
        return inp, int(inp["FORCE_EVAL"]["DFT"]["SCF"]["MAX_SCF"].values[0])

    def check(self, directory="./"):
        out = Path(directory) / self.output_file
        text = out.read_text(errors="replace") if out.exists() else ""
        if "SCF run NOT converged" not in text:
            return False
        return self._max_scf(directory)[1] < self.limit

    def correct(self, directory="./"):
        from pymatgen.io.cp2k.inputs import Keyword

        inp, n = self._max_scf(directory)
        new = min(self.limit, n * self.factor)
        inp["FORCE_EVAL"]["DFT"]["SCF"].keywords["MAX_SCF"] = Keyword("MAX_SCF", new)
        inp.write_file(self.input_file, directory)
        return {"errors": ["SCF not converged"], "actions": [{"MAX_SCF": [n, new]}]}


class Cp2kStdErrHandler(StdErrHandler):
    """custodian's CP2K ``StdErrHandler``, reading ``std_err`` in ``directory``.

    Upstream ``check()`` ignores its directory argument and opens the file
    relative to the current working directory.
    """

    def check(self, directory="./"):
        self.errors = set()
        with open(os.path.join(directory, self.std_err)) as file:
            for line in file:
                for err, msgs in StdErrHandler.error_msgs.items():
                    if any(msg in line for msg in msgs):
                        self.errors.add(err)
        return len(self.errors) > 0


__all__ = ["Cp2kStdErrHandler", "MaxScfHandler", "OwnCp2kJob", "OwnVaspJob", "child_env"]
