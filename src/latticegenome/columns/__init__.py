"""Stage 2, image analysis: read an image, find the A and B lattices, refine every column (Poisson ML), store the columns."""
