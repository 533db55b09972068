"""Stage 1, ingest: raw images from a facility to scratch (local folder or Globus), checksummed, with a manifest.

Every facility is a :class:`~latticegenome.ingest.backends.TransferBackend`
(``name``, ``kind``, ``collection_label``, ``list``, ``ingest``, ``publish``)
returned by :func:`~latticegenome.ingest.backends.backend_for`:
:class:`~latticegenome.ingest.local.LocalBackend` (``local``) or
:class:`~latticegenome.ingest.globus.GlobusBackend` (``globus``; its client in
``globus_client``, one task's life in ``globus_tasks``). The manifest and the
refused list are :mod:`~latticegenome.ingest.manifest`'s. Progress goes to
each module's ``logging.getLogger(__name__)``.
"""
