"""The Globus client: settings, identity and SDK errors as one line.

- :class:`GlobusSettings`: the ``globus:`` block of the configuration.
- :func:`make_app`, :func:`transfer_client`: who this process is to Globus.
  A person's :class:`~globus_sdk.UserApp` (``latticegenome login``; refresh
  tokens in the SDK's token storage, a file readable by the user only) or, for
  unattended runs, a :class:`~globus_sdk.ClientApp` from the environment
  variables :data:`ENV_CLIENT_ID` and :data:`ENV_CLIENT_SECRET`.
- :func:`explain`, :func:`sdk_call`: an SDK exception becomes one
  :class:`~latticegenome.core.errors.TransferError` line naming what was asked
  for and the fix.
- :func:`login`, :func:`logout`: the commands of the same names.

Nothing here logs or puts into a message a token, a secret or a request header.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from latticegenome.core.errors import TransferError
from latticegenome.core.settings import GlobusSettings  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

#: Environment variables of a confidential client (unattended runs).
ENV_CLIENT_ID = "LATTICEGENOME_GLOBUS_CLIENT_ID"
ENV_CLIENT_SECRET = "LATTICEGENOME_GLOBUS_CLIENT_SECRET"
#: Environment variable overriding ``globus.native_client_id`` (people).
ENV_NATIVE_CLIENT_ID = "LATTICEGENOME_GLOBUS_NATIVE_CLIENT_ID"
APP_NAME = "latticegenome"
LOGIN = "latticegenome login"


# GlobusSettings (the ``globus:`` block) is the configuration model's:
# :class:`latticegenome.core.settings.GlobusSettings`, every default once.


# --------------------------------------------------------------------------- identity


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


def sdk_call(what: str, client_mode: bool, fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)``, with a Globus SDK error turned into one line.

    Parameters
    ----------
    what : str
        What is asked for, named in the message (e.g. a collection's
        :meth:`~latticegenome.ingest.globus.Collection.describe`).
    client_mode : bool
        Whether this process is a confidential client (the fix differs).
    fn : callable
        A :class:`globus_sdk.TransferClient` method or any function calling one.

    Raises
    ------
    TransferError
        For SDK and token errors (:func:`explain`); a TransferError raised
        by ``fn`` passes unchanged, any other exception too.
    """
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
            raise explain(exc, what, client_mode=client_mode) from None
        raise


# --------------------------------------------------------------------------- login


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


def _say(message: str, log) -> None:
    """The one-line result of a command: to the logger, and to ``log`` unless None."""
    logger.info("%s", message)
    if log is not None:
        log(message)


def login(config: dict, *, force: bool = False, log=print) -> Path | None:
    """Log a person in (native app flow) with consent for every Globus collection used.

    Tokens (with refresh tokens) go to the SDK's JSON token storage; the file
    is made readable by the user only.

    Parameters
    ----------
    config : dict
        The configuration (its ``globus:`` block and facilities).
    force : bool
        Log in again even with valid tokens.
    log : callable or None
        Where the one-line result also goes (the terminal of
        ``latticegenome login`` by default; it always goes to this module's
        logger). Deprecated: kept until the command prints the returned path
        itself; pass None to silence it.

    Returns
    -------
    Path or None
        The token file.
    """
    settings = GlobusSettings.from_config(config.get("globus"))
    settings.auth = "user"
    app = make_app(settings, interactive=True)
    transfer_client(app, _consent_ids(config))
    app.login(force=force)
    path = token_file(app)
    if path and path.exists():
        os.chmod(path, 0o600)
        _say(f"logged in; tokens in {path} (readable by you only)", log)
    return path


def logout(config: dict, *, log=print) -> None:
    """Revoke and remove the stored tokens of ``latticegenome login``.

    ``log``: as for :func:`login` (deprecated).
    """
    settings = GlobusSettings.from_config(config.get("globus"))
    settings.auth = "user"
    app = make_app(settings)
    transfer_client(app, _consent_ids(config))
    app.logout(sweep=True)
    _say("logged out; stored Globus tokens revoked and removed", log)


__all__ = ["APP_NAME", "ENV_CLIENT_ID", "ENV_CLIENT_SECRET", "ENV_NATIVE_CLIENT_ID", "LOGIN",
           "GlobusSettings", "explain", "login", "logout", "make_app", "sdk_call", "token_file",
           "transfer_client", "unattended"]
