"""Stage 4, structure models and DFT: reference structures, a model per class, CP2K and VASP under custodian."""
