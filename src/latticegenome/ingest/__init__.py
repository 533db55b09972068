"""Stage 1, ingest: raw images from a facility to scratch (local folder or Globus), checksummed, with a manifest."""
