"""Globus transfer backend (globus-sdk v4), behind the same interface as the local one.

Three kinds of Globus collection take part:

- the *source* facility (the microscope facility's collection), where raw
  images live: ``{backend: globus, collection_id, path}``;
- the *host* facility: the HPC facility's collection on which this workflow
  runs. Its ``local_path`` is the folder the workflow sees on the file system
  and its ``path`` is the same folder as the collection shows it; scratch and
  results must lie below ``local_path``;
- the *publication* facility, where results packages go.

Ingest submits ONE transfer task per experiment (checksum sync, checksum
verification, a deadline, a label naming the experiment). A submission id is
written to disk before the task is submitted, so a job killed between
submission and completion resubmits the same id and Globus answers with the
existing task instead of creating a duplicate. Waiting is bounded; the task's
real status is read afterwards (``task_wait`` also returns on INACTIVE) and
every way a task can stop (FAILED, INACTIVE, paused, too many faults,
deadline passed, still running when our wait ends) becomes one
:class:`~latticegenome.core.errors.TransferError` saying what happened and what to
do.

Authentication, settings and SDK errors: :mod:`latticegenome.ingest.globus_client`
(its names are importable from here too). One task (state file, submission,
waiting, what each status means): :mod:`latticegenome.ingest.globus_tasks`.
Here: :class:`Collection` and :class:`GlobusBackend`, whose :meth:`~GlobusBackend.ingest`
is planned (:func:`plan_ingest`), run as one task and recorded
(:func:`manifest_from_task`), and whose :meth:`~GlobusBackend.publish` is
planned (:func:`plan_publication`, folders made first) and run as one task.
Progress goes to ``logging.getLogger(__name__)`` and that of the task module.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import sha256_file

# The client's names are this module's too (``from latticegenome.ingest.globus import login``).
from latticegenome.ingest.globus_client import (
    APP_NAME,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_NATIVE_CLIENT_ID,
    LOGIN,
    GlobusSettings,
    explain,
    login,
    logout,
    make_app,
    sdk_call,
    token_file,
    transfer_client,
    unattended,
)
from latticegenome.ingest.globus_tasks import (
    new_state,
    read_state,
    skipped_files,
    submit_task,
    transferred_count,
    wait_for_task,
    write_state,
)
from latticegenome.ingest.manifest import (
    ManifestEntry,
    _now,
    _warn_log_ignored,
    check_name,
    publishable_files,
    record_copy,
    write_manifest,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- collections


@dataclass
class Collection:
    """A Globus collection and a base path on it."""

    name: str
    collection_id: str
    path: str = "/"
    local_path: Path | None = None
    data_access: bool = True

    def remote(self, *parts: str) -> str:
        """A path on the collection below the base path."""
        p = PurePosixPath(self.path or "/")
        for part in parts:
            p = p / str(part).strip("/")
        return str(p)

    def remote_of_local(self, local: str | Path) -> str:
        """The collection path of a local folder below ``local_path``."""
        if self.local_path is None:
            raise TransferError(f"facility '{self.name}' has no local_path: it cannot be the "
                                "host collection")
        local = Path(local).resolve()
        root = Path(self.local_path).resolve()
        try:
            rel = local.relative_to(root)
        except ValueError:
            raise TransferError(f"{local} is not below the host facility '{self.name}' "
                                f"local_path {root}") from None
        return self.remote(*rel.parts) if rel.parts else self.remote()

    def describe(self) -> str:
        return f"Globus collection '{self.name}' ({self.collection_id}:{self.path})"


def collection_from_config(name: str, block: dict, *, base: str | Path = ".") -> Collection:
    """A :class:`Collection` from a facility block with ``backend: globus``."""
    if not block.get("collection_id"):
        raise TransferError(f"facility '{name}': backend globus needs collection_id")
    local = block.get("local_path")
    if local is not None:
        local = Path(local)
        if not local.is_absolute():
            local = Path(base) / local
    return Collection(name, str(block["collection_id"]), block.get("path", "/"), local,
                      bool(block.get("data_access", True)))


# --------------------------------------------------------------------------- ingest


def _safe_names(files, where: str, pattern: str, *, required: bool = True
                ) -> tuple[list[list], list[tuple[str, str]]]:
    """The listed files whose names are safe (``[name, size]``) and those refused.

    Raises
    ------
    TransferError
        Nothing matched, or no name is acceptable (only when ``required``:
        an increment may bring nothing new).
    """
    if not files and not required:
        return [], []
    if not files:
        raise TransferError(f"no files match '{pattern}' in {where}")
    ok, refused = [], []
    for name, size in files:
        try:
            check_name(name)
            ok.append([name, size])
        except TransferError as exc:
            refused.append((name, exc.reason))
            logger.info("refused: %s", exc.reason)
    if not ok and required:
        raise TransferError(f"no acceptable file names in {where}")
    return ok, refused


def plan_ingest(backend: GlobusBackend, path: str, pattern: str, remote_dest: str,
                label: str, skip=None) -> dict:
    """The state of a new ingest task, not yet submitted.

    The facility folder is listed; files with unsafe names are refused
    (never submitted, never written); a submission id is asked for.

    Parameters
    ----------
    backend : GlobusBackend
    path, pattern : str
        The experiment folder on the facility's collection and the file pattern.
    remote_dest : str
        The destination folder as the host collection shows it.
    label : str
        The task's label.
    skip : dict, optional
        ``{name: ManifestEntry}`` of files ingested before: left out of the
        task; one whose size at the facility differs from its record is
        refused as changed (reported, the copy that arrived is kept).

    Returns
    -------
    dict
        :func:`~latticegenome.ingest.globus_tasks.new_state` plus
        ``source_path``, ``destination``, ``pattern``, ``files`` (name, size)
        and ``refused`` (name, reason).
    """
    where = f"{backend.collection.describe()} folder '{path}'"
    listed, skip = backend.list(path, pattern), skip or {}
    fresh = [f for f in listed if f[0] not in skip]
    ok, refused = _safe_names(fresh, where, pattern, required=not skip)
    refused += [(n, f"changed at the facility since ingest (size {skip[n].size} -> {size}); "
                    "the copy that arrived is used") for n, size in listed
                if n in skip and int(size) != skip[n].size]
    if not ok:  # nothing new: no task (and no submission id asked for)
        return {"files": [], "refused": refused}
    state = new_state(backend.client, backend.settings, label,
                      backend.collection.collection_id, backend.host.collection_id)
    state.update({"source_path": backend.collection.remote(path), "destination": remote_dest,
                  "pattern": pattern, "files": ok, "refused": refused})
    return state


def manifest_from_task(state: dict, dest_dir: Path, task_id: str, skipped, *, facility: str,
                       collection: str) -> list[ManifestEntry]:
    """The manifest entries of a finished ingest task.

    Every planned file that Globus did not skip must be in ``dest_dir``; it
    is made read-only and hashed, and its provenance sidecar is written.

    Parameters
    ----------
    state : dict
        From :func:`plan_ingest`.
    dest_dir : Path
        Where the task put the files (below the host's ``local_path``).
    task_id : str
    skipped : list of (name, reason)
        :func:`~latticegenome.ingest.globus_tasks.skipped_files`.
    facility, collection : str
        The manifest's ``facility`` and ``collection`` columns.

    Raises
    ------
    TransferError
        A file the task should have written is not in ``dest_dir`` (the host
        facility's ``local_path`` does not match its collection path).
    """
    skipped_names = {n for n, _ in skipped}
    entries = []
    for name, _ in state["files"]:
        if name in skipped_names:
            continue
        dest = dest_dir / name
        if not dest.is_file():
            raise TransferError(f"Globus task {task_id} succeeded but {name} is not in "
                                f"{dest_dir}: is the host facility's local_path right?",
                                str(dest))
        os.chmod(dest, 0o444)
        entries.append(record_copy(
            dest, size=dest.stat().st_size, sha256=sha256_file(dest), facility=facility,
            collection=collection, source_path=f"{state['source_path']}/{name}",
            task_id=task_id))
    return entries


# --------------------------------------------------------------------------- publish


def folders_to_make(remote_target: str, rels) -> list[str]:
    """Folders a publication needs on the collection, parents first (``mkdir -p``).

    Examples
    --------
    >>> folders_to_make("/pub/exp", [Path("figures/a.png"), Path("b.h5")])
    ['/pub', '/pub/exp', '/pub/exp/figures']
    """
    parts = PurePosixPath(remote_target).parts
    folders = [str(PurePosixPath(*parts[:i])) for i in range(2, len(parts) + 1)]
    folders += sorted({f"{remote_target}/{PurePosixPath(*rel.parts[:i])}"
                       for rel in rels for i in range(1, len(rel.parts))})
    return folders


def plan_publication(backend: GlobusBackend, source: Path, dest: str, rels, digests: dict,
                     label: str) -> dict:
    """The state of a new publication task; its folders are made first.

    Parameters
    ----------
    backend : GlobusBackend
    source : Path
        The package folder (or one file) below the host's ``local_path``.
    dest : str
        Where it goes, below the collection's base path.
    rels : list of Path
        The files' paths in the package.
    digests : dict
        ``{relative path: [size, sha256]}``: each file's external checksum.
    label : str

    Returns
    -------
    dict
        :func:`~latticegenome.ingest.globus_tasks.new_state` plus ``source``,
        ``destination``, ``digests`` and ``skip_source_errors`` (False).
    """
    remote_target = backend.collection.remote(dest)
    for folder in folders_to_make(remote_target, rels):  # existing folders are fine
        backend._mkdir(folder)
    host = backend.host
    state = new_state(backend.client, backend.settings, label, host.collection_id,
                      backend.collection.collection_id)
    state.update({"source": host.remote_of_local(source.parent if source.is_file() else source),
                  "destination": remote_target, "digests": digests,
                  "skip_source_errors": False})
    return state


# --------------------------------------------------------------------------- backend


@dataclass
class GlobusBackend:
    """A facility that is a Globus collection.

    One of the backends of :class:`latticegenome.ingest.backends.TransferBackend`.
    Progress goes to the loggers of this module and of
    :mod:`~latticegenome.ingest.globus_tasks`; the ``log`` parameters are
    deprecated and ignored.

    Parameters
    ----------
    collection : Collection
        The facility's collection (source of an ingest, or destination of a
        publication).
    host : Collection
        The collection this workflow runs on (scratch and results below its
        ``local_path``).
    client : globus_sdk.TransferClient
    settings : GlobusSettings
    """

    collection: Collection
    host: Collection
    client: object
    settings: GlobusSettings = field(default_factory=GlobusSettings)
    kind: str = "globus"

    @property
    def name(self) -> str:
        return self.collection.name

    @property
    def collection_label(self) -> str:
        """``globus:<collection id>``, the manifest's ``collection`` column."""
        return f"globus:{self.collection.collection_id}"

    def _call(self, what: str, fn, *args, **kwargs):
        return sdk_call(what, unattended(self.settings), fn, *args, **kwargs)

    def check(self) -> None:
        """Fail early (one line, with the fix) if the collection cannot be used."""
        for coll in (self.collection, self.host):
            self._call(coll.describe(), self.client.operation_ls, coll.collection_id,
                       path=coll.remote(), limit=1)

    def list(self, path: str, pattern: str = "*") -> list[tuple[str, int]]:
        """Files (name, size) in ``path`` matching ``pattern``, all pages, sorted."""
        where = f"{self.collection.describe()} folder '{path}'"
        out, offset, limit = [], 0, 1000
        while True:
            page = self._call(where, self.client.operation_ls, self.collection.collection_id,
                              path=self.collection.remote(path), limit=limit, offset=offset)
            data = list(page["DATA"])
            for item in data:
                if item.get("type") == "file" and fnmatch.fnmatch(item["name"], pattern):
                    out.append((item["name"], int(item.get("size", 0))))
            offset += len(data)
            if not data or not page.get("has_next_page", False):
                break
        return sorted(out)

    def wait(self, task_id: str, *, log=None) -> dict:
        """:func:`~latticegenome.ingest.globus_tasks.wait_for_task` with this
        backend's client and settings (``log`` is deprecated and ignored)."""
        _warn_log_ignored(log, "GlobusBackend.wait", "latticegenome.ingest.globus_tasks")
        return wait_for_task(self.client, task_id, self.settings)

    def _submit(self, state: dict, state_path: Path, items) -> str:
        return submit_task(self.client, state, state_path, items, settings=self.settings,
                           what=f"submitting the transfer to {self.host.describe()}")

    def _mkdir(self, folder: str) -> None:
        """Make a folder on the collection; an existing one is fine."""
        import globus_sdk

        try:
            self.client.operation_mkdir(self.collection.collection_id, folder)
        except globus_sdk.GlobusError as exc:
            if "Exists" in str(getattr(exc, "code", "") or ""):
                return
            raise explain(exc, f"{self.collection.describe()} folder '{folder}'",
                          client_mode=unattended(self.settings)) from None

    def ingest(self, path: str, pattern: str, dest_dir: str | Path, manifest: str | Path | None,
               *, label: str | None = None, log=None, skip=None,
               state_name: str = ".transfer.json"):
        """One checksum-verified task from the facility to ``dest_dir``; then the manifest.

        ``dest_dir`` must lie below the host facility's ``local_path``. A
        rerun resumes the task of an unfinished ingest (its state file
        ``dest_dir/.transfer.json``). Returns ``(entries, refused)`` like the
        local backend; ``refused`` also holds files Globus skipped (e.g.
        permission denied at the source). ``skip`` (files of earlier
        increments, ``{name: ManifestEntry}``) are left out of the task and
        of the entries: an increment submits only what is new, and nothing
        when nothing is (:func:`plan_ingest`); ``state_name`` is the task's
        state file in ``dest_dir`` (one per increment).
        """
        _warn_log_ignored(log, "GlobusBackend.ingest", __name__)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        remote_dest = self.host.remote_of_local(dest_dir)
        state_path = dest_dir / state_name
        state = read_state(state_path)
        if state and (state.get("complete") or state.get("backend") != "globus"):
            state = None  # a finished (or local) transfer: this is a new sync
        if state is None:
            state = plan_ingest(self, path, pattern, remote_dest,
                                label or f"latticegenome ingest {path}", skip=skip)
            if not state["files"]:
                if manifest is not None:
                    write_manifest(manifest, [])
                return [], state["refused"]
            write_state(state_path, state)  # the submission id is on disk before submitting
        else:
            logger.info("resuming transfer (submission %s%s)", state["submission_id"],
                        f", task {state['task_id']}" if state.get("task_id") else "")
        refused = [tuple(r) for r in state.get("refused", [])]
        task_id = state.get("task_id") or self._submit(
            state, state_path, [(f"{state['source_path']}/{n}", f"{state['destination']}/{n}", None)
                                for n, _ in state["files"]])
        self.wait(task_id)
        skipped = skipped_files(self.client, task_id, self.settings)
        moved = transferred_count(self.client, task_id, self.settings)
        for name, reason in skipped:
            logger.info("skipped: %s: %s", name, reason)
        entries = manifest_from_task(state, dest_dir, task_id, skipped, facility=self.name,
                                     collection=self.collection_label)
        if manifest is not None:
            write_manifest(manifest, entries)
        state["complete"] = True
        state["completed_at"] = _now()
        write_state(state_path, state)
        logger.info("task %s: %d files transferred, %d already in place, %d skipped, %d refused",
                    task_id, moved, len(entries) - moved, len(skipped), len(refused))
        return entries, refused + skipped

    def publish(self, source: str | Path, dest: str, *, label: str | None = None,
                log=None) -> dict:
        """Send a package folder (or one file) to ``dest`` on the collection: one task.

        Folders are made first (``operation_mkdir``, existing ones are fine);
        each file is transferred with its SHA-256 as an external checksum, so
        Globus verifies the copy against the digest computed here. Returns
        the record of where it went (as the local backend).
        """
        _warn_log_ignored(log, "GlobusBackend.publish", __name__)
        source = Path(source)
        pairs = publishable_files(source)
        # lists, as the state file holds them (JSON has no tuples): a rerun after a kill
        # compares equal and resumes the same task instead of submitting a second one
        digests = {rel.as_posix(): [f.stat().st_size, sha256_file(f)] for f, rel in pairs}
        state_path = source.parent / f".publish-{source.name}.json"
        state = read_state(state_path)
        if state and (state.get("complete") or state.get("digests") != digests):
            state = None
        if state is None:
            state = plan_publication(self, source, dest, [rel for _, rel in pairs], digests,
                                     label or f"latticegenome publish {dest}")
            write_state(state_path, state)
        else:
            logger.info("resuming publication (submission %s)", state["submission_id"])
        task_id = state.get("task_id") or self._submit(
            state, state_path, [(f"{state['source']}/{r}", f"{state['destination']}/{r}", d[1])
                                for r, d in state["digests"].items()])
        self.wait(task_id)
        state["complete"] = True
        write_state(state_path, state)
        out = [{"file": r, "size": d[0], "sha256": d[1]} for r, d in sorted(digests.items())]
        for r in out:
            logger.info("published %s", r["file"])
        return {"facility": self.name, "collection": self.collection_label,
                "path": state["destination"], "task_id": task_id, "files": out,
                "published_at": _now()}


__all__ = ["APP_NAME", "ENV_CLIENT_ID", "ENV_CLIENT_SECRET", "ENV_NATIVE_CLIENT_ID", "LOGIN",
           "Collection", "GlobusBackend", "GlobusSettings", "collection_from_config", "explain",
           "folders_to_make", "login", "logout", "make_app", "manifest_from_task", "plan_ingest",
           "plan_publication", "sdk_call", "token_file", "transfer_client", "unattended"]
