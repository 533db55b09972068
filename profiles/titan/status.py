#!/usr/bin/env python3
"""Job status for Snakemake's cluster-generic executor on PBS/Torque (Titan).

Prints running, success or failed for the job id given, from ``qstat -f``.
A job no longer known to qstat (finished and purged) is looked up with
``qstat -fx`` (history); if that fails too it is reported as failed, so
Snakemake never waits forever.
"""

import re
import subprocess
import sys


def parse_qstat(text: str) -> str:
    """Map ``qstat -f`` output of one job to running / success / failed."""
    state = re.search(r"^\s*job_state\s*=\s*(\w)", text, re.M)
    if not state:
        return "failed"
    s = state.group(1)
    if s in "QRHWTES":
        if s != "E" or "exit_status" not in text.lower():
            return "running"
    code = re.search(r"^\s*exit_status\s*=\s*(-?\d+)", text, re.M | re.I)  # PBS Pro: Exit_status
    if s in ("C", "F", "E") and code:
        return "success" if int(code.group(1)) == 0 else "failed"
    return "running" if s not in ("C", "F") else "failed"


def main(job_id: str) -> str:
    for args in (["qstat", "-f", job_id], ["qstat", "-fx", job_id]):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return parse_qstat(out.stdout)
    return "failed"


if __name__ == "__main__":
    print(main(sys.argv[1]))
