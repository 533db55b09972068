"""Shared by every stage: errors, atomic files, the configuration, provenance records, tables."""
