"""Figures of the statistics and of analysed images (matplotlib)."""
