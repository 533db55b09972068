"""The transfer backend of a facility: :func:`backend_for` (local folder or Globus
collection, from a facility block of the configuration) and :func:`preflight`
(every Globus collection a run needs is usable before any job starts)."""

from __future__ import annotations

from pathlib import Path

from latticegenome.core.errors import TransferError
from latticegenome.ingest.local import LocalBackend  # noqa: F401


def backend_for(name: str, facility: dict, *, base: str | Path = ".", config: dict | None = None,
                client=None):
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
        from latticegenome.ingest.globus import (
            GlobusBackend,
            GlobusSettings,
            collection_from_config,
            make_app,
            transfer_client,
        )

        config = config or {}
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
    raise TransferError(f"facility '{name}': unknown transfer backend '{kind}'")


def preflight(config: dict, *, facilities, base: str | Path = ".", client=None,
              log=print) -> None:
    """Check, before any work, that each named Globus facility can be used.

    Lists each collection's base path once (and the host's). Missing login,
    an expired refresh token or a missing data_access consent raise a
    :class:`~latticegenome.core.errors.TransferError` of one line that names the
    collection and the command that fixes it.
    """
    checked = set()
    for name in facilities:
        block = config["facilities"][name]
        if block.get("backend") != "globus" or name in checked:
            continue
        backend = backend_for(name, block, base=base, config=config, client=client)
        backend.check()
        checked.update({name, backend.host.name})
        log(f"Globus: {backend.collection.describe()} and host {backend.host.describe()} OK")


__all__ = ["backend_for", "preflight"]
