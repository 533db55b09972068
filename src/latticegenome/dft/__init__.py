"""Stage 4, structure models and DFT: reference structures, a model per class, CP2K and VASP under custodian.

- ``structures``: references (Materials Project, cache, files), the models folder (``write_models``).
- ``calculations``: one calculation on one model (``run_model``), CP2K and VASP, the DFT table.
- ``jobs``: custodian jobs and handlers of our own (imports custodian).
- ``stopping``: a stopped run stops its launcher and every MPI rank.
"""
