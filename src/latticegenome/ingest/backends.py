"""The transfer backend of a facility: :class:`TransferBackend` (what every
backend offers), :func:`backend_for` (local folder or Globus collection, from a
facility block of the configuration) and :func:`preflight` (every Globus
collection a run needs is usable before any job starts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

from latticegenome.core.errors import TransferError
from latticegenome.ingest.local import LocalBackend
from latticegenome.ingest.manifest import ManifestEntry, _warn_log_ignored

logger = logging.getLogger(__name__)


@runtime_checkable
class TransferBackend(Protocol):
    """A facility's transfer backend: what ingest and publication use.

    Implemented by :class:`latticegenome.ingest.local.LocalBackend` (a folder)
    and :class:`latticegenome.ingest.globus.GlobusBackend` (a Globus
    collection). Both are resumable: a rerun after a killed job continues the
    same task (a state file beside the transfer). Progress goes to each
    backend module's ``logging.getLogger(__name__)``; the ``log`` parameters
    the methods still accept are deprecated and ignored.

    Attributes
    ----------
    name : str
        The facility's name in the configuration.
    kind : str
        ``"local"`` or ``"globus"`` (the facility block's ``backend``).
    collection_label : str
        Where the files are, as the manifest's ``collection`` column and a
        publication record write it: ``local:<folder>`` or
        ``globus:<collection id>``. (``collection`` itself differs: the same
        text for a local folder, a :class:`~latticegenome.ingest.globus.Collection`
        for Globus.)

    Examples
    --------
    >>> backend = backend_for("scope", {"backend": "local", "path": "/data/scope"})
    >>> isinstance(backend, TransferBackend), backend.kind
    (True, 'local')
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def collection_label(self) -> str: ...

    def list(self, path: str, pattern: str = "*") -> list[tuple[str, int]]:
        """Files ``(name, size in bytes)`` in the facility folder ``path``, sorted."""
        ...

    def ingest(self, path: str, pattern: str, dest_dir: str | Path, manifest: str | Path, *,
               label: str | None = None
               ) -> tuple[list[ManifestEntry], list[tuple[str, str]]]:
        """Bring the files of ``path`` matching ``pattern`` into ``dest_dir``
        (checksummed, read-only) and write the manifest.

        Returns the manifest's entries and the files refused or skipped as
        ``(name, reason)``, for :func:`~latticegenome.ingest.manifest.write_refused`.
        Raises :class:`~latticegenome.core.errors.TransferError` (one line).
        """
        ...

    def publish(self, source: str | Path, dest: str, *, label: str | None = None) -> dict:
        """Send a package folder (or one file) to ``dest`` at the facility.

        Returns the record of the publication: ``facility``, ``collection``
        (:attr:`collection_label`), ``path``, ``task_id``, ``files`` (``file``,
        ``size``, ``sha256``) and ``published_at``.
        """
        ...


def backend_for(name: str, facility: dict, *, base: str | Path = ".", config: dict | None = None,
                client=None) -> TransferBackend:
    """The transfer backend of a facility block of the configuration.

    Parameters
    ----------
    name : str
        The facility's name.
    facility : dict
        Its block: ``{backend: local, path}`` or ``{backend: globus,
        collection_id, path}``.
    base : str or Path
        Folder that relative local paths are relative to.
    config : dict, optional
        The whole configuration; needed for Globus (its ``globus:`` block
        names the host facility this workflow runs on).
    client : globus_sdk.TransferClient, optional
        For Globus, a client to use instead of one authenticated from the
        environment or the user's tokens.

    Raises
    ------
    TransferError
        For an unknown backend or an incomplete Globus configuration.
    """
    kind = facility.get("backend", "local")
    if kind == "local":
        root = Path(facility["path"])
        if not root.is_absolute():
            root = Path(base) / root
        return LocalBackend(name, root)
    if kind == "globus":
        return _globus_backend(name, facility, base=base, config=config or {}, client=client)
    raise TransferError(f"facility '{name}': unknown transfer backend '{kind}'")


def _globus_backend(name: str, facility: dict, *, base, config: dict, client):
    """The :class:`~latticegenome.ingest.globus.GlobusBackend` of a facility block."""
    from latticegenome.ingest.globus import (
        GlobusBackend,
        GlobusSettings,
        collection_from_config,
        make_app,
        transfer_client,
    )

    gblock = config.get("globus") or {}
    host_name = gblock.get("host")
    facilities = config.get("facilities", {})
    if not host_name or host_name not in facilities:
        raise TransferError(f"facility '{name}' uses Globus: set globus.host to the facility "
                            "(a Globus collection with local_path) this workflow runs on")
    host = collection_from_config(host_name, facilities[host_name], base=base)
    coll = collection_from_config(name, facility, base=base)
    settings = GlobusSettings.from_config(gblock)
    if client is None:
        consent = [c.collection_id for c in (coll, host) if c.data_access]
        client = transfer_client(make_app(settings), consent)
    return GlobusBackend(coll, host, client, settings)


def preflight(config: dict, *, facilities, base: str | Path = ".", client=None,
              log=None) -> None:
    """Check, before any work, that each named Globus facility can be used.

    Lists each collection's base path once (and the host's). Missing login,
    an expired refresh token or a missing data_access consent raise a
    :class:`~latticegenome.core.errors.TransferError` of one line that names the
    collection and the command that fixes it. Each collection found usable
    is logged (INFO); ``log`` is deprecated and ignored (a DeprecationWarning).
    """
    _warn_log_ignored(log, "preflight", __name__)
    checked = set()
    for name in facilities:
        block = config["facilities"][name]
        if block.get("backend") != "globus" or name in checked:
            continue
        backend = backend_for(name, block, base=base, config=config, client=client)
        backend.check()
        checked.update({name, backend.host.name})
        logger.info("Globus: %s and host %s OK", backend.collection.describe(),
                    backend.host.describe())


__all__ = ["TransferBackend", "backend_for", "preflight"]
