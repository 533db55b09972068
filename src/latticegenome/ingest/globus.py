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

Authentication is a :class:`globus_sdk.GlobusApp`: a person's
:class:`~globus_sdk.UserApp` (``latticegenome login``; refresh tokens in the
SDK's token storage, a file readable by the user only) or, for unattended
runs, a :class:`~globus_sdk.ClientApp` from the environment variables
:data:`ENV_CLIENT_ID` and :data:`ENV_CLIENT_SECRET`. Nothing here logs or
puts into a message a token, a secret or a request header.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import atomic_write, sha256_file
from latticegenome.ingest.manifest import (
    BOOKKEEPING,
    ManifestEntry,
    check_name,
    write_manifest,
    write_raw_provenance,
)

#: Environment variables of a confidential client (unattended runs).
ENV_CLIENT_ID = "LATTICEGENOME_GLOBUS_CLIENT_ID"
ENV_CLIENT_SECRET = "LATTICEGENOME_GLOBUS_CLIENT_SECRET"
#: Environment variable overriding ``globus.native_client_id`` (people).
ENV_NATIVE_CLIENT_ID = "LATTICEGENOME_GLOBUS_NATIVE_CLIENT_ID"
APP_NAME = "latticegenome"
LOGIN = "latticegenome login"


@dataclass
class GlobusSettings:
    """Behaviour of Globus tasks (the ``globus:`` block of the configuration).

    Parameters
    ----------
    auth : {"user", "client"}
        ``user``: a person's tokens from ``latticegenome login``; ``client``:
        a confidential client from :data:`ENV_CLIENT_ID` and
        :data:`ENV_CLIENT_SECRET` (unattended runs).
    host : str or None
        The facility this workflow runs on.
    native_client_id : str or None
        Client id of the registered native app people log in with.
    poll_seconds : int
        Seconds between task status polls.
    wait_hours : float
        How long one job waits for a task before it stops (the task goes on;
        a rerun resumes waiting for the same task).
    deadline_hours : float
        Task deadline: Globus stops retrying faults after this.
    max_faults : int
        Stop waiting once a task has had more faults than this.
    """

    auth: str = "user"
    host: str | None = None
    native_client_id: str | None = None
    poll_seconds: int = 15
    wait_hours: float = 12.0
    deadline_hours: float = 24.0
    max_faults: int = 50

    @classmethod
    def from_config(cls, block: dict | None) -> GlobusSettings:
        block = dict(block or {})
        known = {k: block[k] for k in cls.__dataclass_fields__ if k in block}
        return cls(**known)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- auth


def unattended(settings: GlobusSettings | None = None) -> bool:
    """Whether this process authenticates as a confidential client."""
    if settings is not None:
        return settings.auth == "client"
    return bool(os.environ.get(ENV_CLIENT_ID) and os.environ.get(ENV_CLIENT_SECRET))


def make_app(settings: GlobusSettings | None = None, *, interactive: bool = False):
    """The Globus app this process authenticates as.

    A :class:`~globus_sdk.ClientApp` (``auth: client``) from
    :data:`ENV_CLIENT_ID` and :data:`ENV_CLIENT_SECRET`, else a :class:`~globus_sdk.UserApp`
    with refresh tokens in the SDK's JSON token storage
    (``~/.globus/app/<client id>/latticegenome/tokens.json``, mode 0600).
    A non-interactive app never starts a login flow: missing or expired
    tokens raise instead, so a batch job cannot hang on a prompt.
    """
    import globus_sdk
    from globus_sdk.globus_app.config import resolve_by_login_flow

    settings = settings or GlobusSettings()
    if settings.auth == "client":
        missing = [v for v in (ENV_CLIENT_ID, ENV_CLIENT_SECRET) if not os.environ.get(v)]
        if missing:
            raise TransferError(f"globus.auth is client but {' and '.join(missing)} "
                                f"{'is' if len(missing) == 1 else 'are'} not set")
        # Tokens of a confidential client stay in memory: they are cheap to get
        # again, and none is written where concurrent batch jobs would share it.
        return globus_sdk.ClientApp(APP_NAME, client_id=os.environ[ENV_CLIENT_ID],
                                    client_secret=os.environ[ENV_CLIENT_SECRET],
                                    config=globus_sdk.GlobusAppConfig(token_storage="memory"))
    native = os.environ.get(ENV_NATIVE_CLIENT_ID) or settings.native_client_id
    if not native:
        raise TransferError(
            "no Globus identity: set globus.native_client_id in the configuration (a native "
            f"app registered at https://app.globus.org/settings/developers) and run `{LOGIN}`, "
            f"or set {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} for unattended runs")
    config = globus_sdk.GlobusAppConfig(
        request_refresh_tokens=True,
        token_storage="json",
        token_validation_error_handler=resolve_by_login_flow if interactive else None,
    )
    return globus_sdk.UserApp(APP_NAME, client_id=native, config=config)


def transfer_client(app, consent_collections=()):
    """A :class:`globus_sdk.TransferClient` for ``app``.

    ``consent_collections`` are mapped (non High Assurance) collections
    whose ``data_access`` consent is requested up front.
    """
    import globus_sdk

    tc = globus_sdk.TransferClient(app=app)
    ids = [str(c) for c in consent_collections]
    if ids:
        tc.add_app_data_access_scope(ids)
    return tc


def explain(exc: BaseException, what: str, *, client_mode: bool | None = None) -> TransferError:
    """Turn an SDK exception into one line naming ``what`` and the fix.

    Never includes tokens, secrets or request headers.
    """
    client = unattended() if client_mode is None else client_mode
    import globus_sdk
    from globus_sdk.token_storage.validating_token_storage.errors import (
        TokenValidationError,
    )

    fix_login = (f"set {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET} to a client with access"
                 if client else f"run `{LOGIN}`")
    if isinstance(exc, TokenValidationError):
        return TransferError(f"not logged in to Globus with access to {what}: {fix_login}")
    if isinstance(exc, globus_sdk.AuthAPIError):
        if exc.http_status in (400, 401) and "invalid_grant" in f"{exc.code} {exc.text}":
            return TransferError(
                f"Globus refresh token expired or revoked (needed for {what}): {fix_login}")
        if exc.http_status == 401 or "invalid_client" in f"{exc.code} {exc.text}":
            return TransferError(f"Globus rejected the client credentials (needed for {what}): "
                                 f"check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}")
        return TransferError(f"Globus Auth refused a token for {what} "
                             f"(HTTP {exc.http_status}): {fix_login}")
    if isinstance(exc, globus_sdk.GlobusAPIError):
        code = str(exc.code or "")
        if code == "ConsentRequired" or getattr(exc.info, "consent_required", False):
            if client:
                return TransferError(
                    f"{what} needs data_access consent for the client in {ENV_CLIENT_ID}: "
                    "list the collection with data_access: true in the configuration")
            return TransferError(f"{what} needs data_access consent: run `{LOGIN}`")
        if exc.http_status == 401:
            return TransferError(f"Globus token for {what} was refused: {fix_login}")
        if code.startswith("ClientError.NotFound") or exc.http_status == 404:
            return TransferError(f"{what}: not found ({exc.message})")
        if "PermissionDenied" in code or exc.http_status == 403:
            return TransferError(f"{what}: permission denied ({exc.message}); ask the "
                                 "collection's administrator for access")
        return TransferError(f"{what}: Globus error {exc.http_status} {code} ({exc.message})")
    if isinstance(exc, globus_sdk.NetworkError):
        return TransferError(f"{what}: Globus cannot be reached ({type(exc).__name__}); "
                             "check the network and rerun")
    return TransferError(f"{what}: {type(exc).__name__}: {exc}")


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


# --------------------------------------------------------------------------- backend


@dataclass
class GlobusBackend:
    """A facility that is a Globus collection.

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
        return f"globus:{self.collection.collection_id}"

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TransferError:
            raise
        except Exception as exc:  # SDK errors become one line
            import globus_sdk
            from globus_sdk.token_storage.validating_token_storage.errors import (
                TokenValidationError,
            )

            if isinstance(exc, (globus_sdk.GlobusError, TokenValidationError)):
                raise explain(exc, what, client_mode=unattended(self.settings)) from None
            raise

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

    # -- tasks

    def _submit(self, state: dict, state_path: Path, items, *, log) -> str:
        """Submit (or resubmit, same submission id) the task of ``state``."""
        import globus_sdk

        td = globus_sdk.TransferData(
            state["source_collection"], state["destination_collection"],
            label=state["label"], submission_id=state["submission_id"],
            sync_level="checksum", verify_checksum=True, preserve_timestamp=True,
            deadline=state["deadline"], skip_source_errors=state.get("skip_source_errors", True),
            fail_on_quota_errors=True, notify_on_succeeded=False,
        )
        for src, dst, checksum in items:
            if checksum:
                td.add_item(src, dst, external_checksum=checksum, checksum_algorithm="SHA256")
            else:
                td.add_item(src, dst)
        res = self._call(f"submitting the transfer to {self.host.describe()}",
                         self.client.submit_transfer, td)
        if res.get("code") == "Duplicate":
            log(f"task {res['task_id']} was already submitted (submission id reused)")
        state["task_id"] = res["task_id"]
        _write_state(state_path, state)
        log(f"task {res['task_id']} submitted: {state['label']}")
        return res["task_id"]

    def _new_state(self, label: str, source: str, dest: str) -> dict:
        sub = self._call("asking Globus for a submission id", self.client.get_submission_id)
        deadline = datetime.now(timezone.utc) + timedelta(hours=self.settings.deadline_hours)
        return {"backend": "globus", "submission_id": sub["value"], "label": label[:128],
                "source_collection": source, "destination_collection": dest,
                "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "created_at": _now()}

    def wait(self, task_id: str, *, log=print) -> dict:
        """Wait (bounded) for a task; return its document once SUCCEEDED.

        Raises
        ------
        TransferError
            FAILED, INACTIVE, paused, more than ``max_faults`` faults,
            deadline passed, or still ACTIVE when the wait ends. The message
            says what the user can do; the task itself is left alone (a rerun
            resumes waiting for it).
        """
        s = self.settings
        what = f"Globus task {task_id}"
        url = f"https://app.globus.org/activity/{task_id}"
        end = time.monotonic() + s.wait_hours * 3600
        first = True
        while True:
            # Our own bounded polling rather than task_wait(): a paused or
            # faulting task stays ACTIVE, and task_wait() would sit on it for
            # its whole timeout; it also returns on INACTIVE. Every poll reads
            # the task document and decides on its real state.
            if not first:
                time.sleep(max(0.0, min(float(s.poll_seconds), end - time.monotonic())))
            first = False
            task = self._call(what, self.client.get_task, task_id)
            status = task["status"]
            if status == "SUCCEEDED":
                return task.data if hasattr(task, "data") else dict(task)
            if status == "FAILED":
                raise TransferError(f"{what} FAILED ({task.get('nice_status') or 'no reason given'}"
                                    f"{self._last_error(task_id)}); see {url}; fix the cause and "
                                    "rerun: a new task is submitted")
            if status == "INACTIVE":
                why = task.get("nice_status") or "credentials"
                raise TransferError(f"{what} is INACTIVE ({why}): it needs new credentials or "
                                    f"consent; run `{LOGIN}`, then rerun to resume the same task "
                                    f"({url})")
            if task.get("is_paused"):
                info = self._call(what, self.client.task_pause_info, task_id)
                rules = [r.get("message") or "" for r in info.get("pause_rules", [])]
                msg = info.get("message_from_admin") or "; ".join(m for m in rules if m)
                raise TransferError(f"{what} is paused by a collection administrator"
                                    f"{': ' + msg if msg else ''}; it continues when unpaused "
                                    f"(a paused task's deadline is extended); rerun to resume "
                                    f"waiting ({url})")
            faults = int(task.get("faults") or 0)
            if faults > s.max_faults:
                raise TransferError(f"{what} has had {faults} faults{self._last_error(task_id)}; "
                                    f"Globus keeps retrying until the deadline: fix the cause or "
                                    f"cancel it at {url}, then rerun")
            deadline = task.get("deadline")
            if deadline and _parse_time(deadline) < datetime.now(timezone.utc):
                raise TransferError(f"{what} passed its deadline {deadline} while {status}; "
                                    f"see {url}; rerun to submit a new task")
            if time.monotonic() >= end:
                raise TransferError(f"{what} is still {status} after waiting "
                                    f"{s.wait_hours:g} h ({task.get('files_transferred', 0)} of "
                                    f"{task.get('files', '?')} files); rerun to resume waiting "
                                    f"({url})")
            log(f"{what}: {status}, {task.get('files_transferred', 0)}/{task.get('files', '?')} "
                f"files, {faults} faults")

    def _last_error(self, task_id: str) -> str:
        try:
            events = self.client.task_event_list(task_id, limit=10,
                                                 query_params={"filter": "is_error:1"})
            for ev in events:
                text = ev.get("description") or ev.get("code") or ""
                details = str(ev.get("details") or "").strip().splitlines()
                if details:
                    text = f"{text}: {details[0][:200]}"
                return f"; last error: {text}"
        except Exception:  # the event list is a courtesy
            pass
        return ""

    def _skipped(self, task_id: str) -> list[tuple[str, str]]:
        out = []
        for page in self.client.paginated.task_skipped_errors(task_id):
            for item in page:
                name = PurePosixPath(item.get("source_path", "")).name
                out.append((name, f"skipped by Globus: {item.get('error_code', '?')} "
                                  f"{item.get('error_details', '')}".strip()))
        return out

    def _transferred_count(self, task_id: str) -> int:
        n = 0
        for page in self.client.paginated.task_successful_transfers(task_id):
            n += len(list(page))
        return n

    # -- the two operations

    def ingest(self, path: str, pattern: str, dest_dir: str | Path, manifest: str | Path, *,
               label: str | None = None, log=print):
        """One checksum-verified task from the facility to ``dest_dir``; then the manifest.

        ``dest_dir`` must lie below the host facility's ``local_path``.
        Returns ``(entries, refused)`` like the local backend; ``refused``
        also holds files Globus skipped (e.g. permission denied at the source).
        """
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        remote_dest = self.host.remote_of_local(dest_dir)
        state_path = dest_dir / ".transfer.json"
        state = _read_state(state_path)
        if state and (state.get("complete") or state.get("backend") != "globus"):
            state = None  # a finished (or local) transfer: this is a new sync
        refused: list[tuple[str, str]] = []
        if state is None:
            files = self.list(path, pattern)
            if not files:
                raise TransferError(f"no files match '{pattern}' in {self.collection.describe()} "
                                    f"folder '{path}'")
            ok = []
            for name, size in files:
                try:
                    check_name(name)
                    ok.append([name, size])
                except TransferError as exc:
                    refused.append((name, exc.reason))
                    log(f"refused: {exc.reason}")
            if not ok:
                raise TransferError(f"no acceptable file names in {self.collection.describe()} "
                                    f"folder '{path}'")
            state = self._new_state(label or f"latticegenome ingest {path}",
                                    self.collection.collection_id, self.host.collection_id)
            state.update({"source_path": self.collection.remote(path), "destination": remote_dest,
                          "pattern": pattern, "files": ok, "refused": refused})
            _write_state(state_path, state)  # the submission id is on disk before submitting
        else:
            refused = [tuple(r) for r in state.get("refused", [])]
            log(f"resuming transfer (submission {state['submission_id']}"
                f"{', task ' + state['task_id'] if state.get('task_id') else ''})")
        task_id = state.get("task_id") or self._submit(
            state, state_path,
            [(f"{state['source_path']}/{n}", f"{state['destination']}/{n}", None)
             for n, _ in state["files"]], log=log)
        self.wait(task_id, log=log)
        skipped = self._call(f"Globus task {task_id}", self._skipped, task_id)
        moved = self._call(f"Globus task {task_id}", self._transferred_count, task_id)
        skipped_names = {n for n, _ in skipped}
        for name, reason in skipped:
            log(f"skipped: {name}: {reason}")
        entries = []
        for name, size in state["files"]:
            if name in skipped_names:
                continue
            dest = dest_dir / name
            if not dest.is_file():
                raise TransferError(f"Globus task {task_id} succeeded but {name} is not in "
                                    f"{dest_dir}: is the host facility's local_path right?",
                                    str(dest))
            os.chmod(dest, 0o444)
            entry = ManifestEntry(
                file=name, size=dest.stat().st_size, sha256=sha256_file(dest),
                facility=self.name, collection=self.collection_label,
                source_path=f"{state['source_path']}/{name}", task_id=task_id,
                transferred_at=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                             time.gmtime(dest.stat().st_mtime)))
            write_raw_provenance(dest, entry)
            entries.append(entry)
        write_manifest(manifest, entries)
        state["complete"] = True
        state["completed_at"] = _now()
        _write_state(state_path, state)
        log(f"task {task_id}: {moved} files transferred, {len(entries) - moved} already in "
            f"place, {len(skipped)} skipped, {len(refused)} refused")
        return entries, refused + skipped

    def _mkdir(self, folder: str) -> None:
        import globus_sdk

        try:
            self.client.operation_mkdir(self.collection.collection_id, folder)
        except globus_sdk.GlobusError as exc:
            if "Exists" in str(getattr(exc, "code", "") or ""):
                return
            raise explain(exc, f"{self.collection.describe()} folder '{folder}'",
                          client_mode=unattended(self.settings)) from None

    def publish(self, source: str | Path, dest: str, *, label: str | None = None,
                log=print) -> dict:
        """Send a package folder (or one file) to ``dest`` on the collection: one task.

        Folders are made first (``operation_mkdir``, existing ones are fine);
        each file is transferred with its SHA-256 as an external checksum, so
        Globus verifies the copy against the digest computed here.
        """
        source = Path(source)
        files = [source] if source.is_file() else sorted(
            p for p in source.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)
        rels = [Path(f.name) if source.is_file() else f.relative_to(source) for f in files]
        for rel in rels:
            for part in rel.parts:
                check_name(part)
        digests = {rel.as_posix(): (f.stat().st_size, sha256_file(f))
                   for f, rel in zip(files, rels)}
        state_path = source.parent / f".publish-{source.name}.json"
        state = _read_state(state_path)
        if state and (state.get("complete") or state.get("digests") != digests):
            state = None
        if state is None:
            remote_target = self.collection.remote(dest)
            parts = PurePosixPath(remote_target).parts
            folders = [str(PurePosixPath(*parts[:i])) for i in range(2, len(parts) + 1)]
            folders += sorted({f"{remote_target}/{PurePosixPath(*rel.parts[:i])}"
                               for rel in rels for i in range(1, len(rel.parts))})
            for folder in folders:  # mkdir -p, parents first; existing folders are fine
                self._mkdir(folder)
            state = self._new_state(label or f"latticegenome publish {dest}",
                                    self.host.collection_id, self.collection.collection_id)
            state.update({"source": self.host.remote_of_local(source.parent if source.is_file()
                                                              else source),
                          "destination": remote_target, "digests": digests,
                          "skip_source_errors": False})
            _write_state(state_path, state)
        else:
            log(f"resuming publication (submission {state['submission_id']})")
        task_id = state.get("task_id") or self._submit(
            state, state_path,
            [(f"{state['source']}/{r}", f"{state['destination']}/{r}", d[1])
             for r, d in state["digests"].items()], log=log)
        self.wait(task_id, log=log)
        state["complete"] = True
        _write_state(state_path, state)
        out = [{"file": r, "size": d[0], "sha256": d[1]} for r, d in sorted(digests.items())]
        for r in out:
            log(f"published {r['file']}")
        return {"facility": self.name, "collection": self.collection_label,
                "path": state["destination"], "task_id": task_id, "files": out,
                "published_at": _now()}


def token_file(app) -> Path | None:
    """Where a user app keeps its tokens (``None`` for a client app)."""
    inner = getattr(getattr(app, "token_storage", None), "token_storage", None)
    path = getattr(inner, "filepath", None)
    return Path(path) if path else None


def _consent_ids(config: dict) -> list[str]:
    from latticegenome.core.config import globus_facilities

    fac = config.get("facilities", {})
    return [fac[n]["collection_id"] for n in globus_facilities(config)
            if fac[n].get("data_access", True)]


def login(config: dict, *, force: bool = False, log=print) -> Path | None:
    """Log a person in (native app flow) with consent for every Globus collection used.

    Tokens (with refresh tokens) go to the SDK's JSON token storage; the file
    is made readable by the user only. Returns its path.
    """
    settings = GlobusSettings.from_config(config.get("globus"))
    settings.auth = "user"
    app = make_app(settings, interactive=True)
    transfer_client(app, _consent_ids(config))
    app.login(force=force)
    path = token_file(app)
    if path and path.exists():
        os.chmod(path, 0o600)
        log(f"logged in; tokens in {path} (readable by you only)")
    return path


def logout(config: dict, *, log=print) -> None:
    """Revoke and remove the stored tokens of ``latticegenome login``."""
    settings = GlobusSettings.from_config(config.get("globus"))
    settings.auth = "user"
    app = make_app(settings)
    transfer_client(app, _consent_ids(config))
    app.logout(sweep=True)
    log("logged out; stored Globus tokens revoked and removed")


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _read_state(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _write_state(path: Path, state: dict) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(state, fh, indent=1)


__all__ = ["Collection", "ENV_CLIENT_ID", "ENV_CLIENT_SECRET", "ENV_NATIVE_CLIENT_ID",
           "GlobusBackend", "GlobusSettings", "collection_from_config", "explain", "login",
           "logout", "make_app",
           "token_file", "transfer_client", "unattended"]
