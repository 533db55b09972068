"""Stage 5, provenance and publication: the chain of a result back to its raw images, the RO-Crate package."""
