"""Stage 3, lattice statistics: unit cells, classes of local configurations, layer profiles, the experiment's aggregate."""
