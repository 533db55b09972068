"""Stage 3, dynamics: image series followed column by column in time, temperature and dose.

Frames of one field of view are registered (rigid, then a smooth field fitted to the
lattice itself), every column gets a track id that is the same lattice site in every
frame, and per-column and per-cell time series, class transitions and summaries
(displacement and lattice parameter against time, temperature and dose, the motion of
domain walls, beam damage) are written to ``dynamics.h5``. Builds on the column finding
(:mod:`latticegenome.columns`) and the cells (:mod:`latticegenome.statistics`).
"""
