#!/usr/bin/env python
"""Run Atomap 0.4.2 on one .npy image; print its columns as JSON.

Runs in a separate virtual environment (Atomap is GPL-3: latticegenome never
imports it). The flow is Atomap's documented one for perovskites: A columns
from peak finding, centre-of-mass then 2-D Gaussian refinement; B columns at
the midpoints along a zone axis, refined on the image with the A model
subtracted. Timed from the array in memory to the refined B columns.
"""

import json
import sys
import time

import atomap.api as am
import hyperspy.api as hs  # noqa: E402
import numpy as np
from atomap.tools import remove_atoms_from_image_using_2d_gaussian

data = np.load(sys.argv[1])
spacing = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
t0 = time.perf_counter()

s = hs.signals.Signal2D(data)
a_pos = am.get_atom_positions(s, separation=int(0.7 * spacing))
sub_a = am.Sublattice(a_pos, image=s.data)
sub_a.find_nearest_neighbors()
sub_a.refine_atom_positions_using_center_of_mass()
sub_a.refine_atom_positions_using_2d_gaussian()
sub_a.construct_zone_axes()
# B sits at the cell centre: the midpoint along the diagonal zone axis (the
# one about sqrt(2) times the nearest-neighbour distance), not along a1 or a2.
zones = sub_a.zones_axis_average_distances
length = [float(np.hypot(*z)) for z in zones]
zone = zones[int(np.argmin([abs(v - np.sqrt(2) * min(length)) for v in length]))]
b_pos = sub_a.find_missing_atoms_from_zone_vector(zone)
without_a = remove_atoms_from_image_using_2d_gaussian(sub_a.image, sub_a)
sub_b = am.Sublattice(b_pos, without_a)
sub_b.find_nearest_neighbors()
sub_b.refine_atom_positions_using_center_of_mass()
sub_b.refine_atom_positions_using_2d_gaussian()
t1 = time.perf_counter()
x = list(sub_a.x_position) + list(sub_b.x_position)
y = list(sub_a.y_position) + list(sub_b.y_position)
site = ["A"] * len(sub_a.x_position) + ["B"] * len(sub_b.x_position)
peak_rss_mb = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status")
                   if line.startswith("VmHWM:"))
print(json.dumps({"seconds": t1 - t0, "peak_rss_mb": peak_rss_mb,
                  "columns": {"x": [float(v) for v in x],
                                                  "y": [float(v) for v in y], "site": site}}))
