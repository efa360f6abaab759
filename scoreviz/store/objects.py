"""Object stores (S3, GCS, any fsspec URL) as the few calls scoreviz needs, and their failures
as one-line ScorevizErrors naming the URL.

Every call here is one request (a listing is one request per 1,000 objects), so what
scoreviz costs in requests can be counted from its code: list a prefix, read an object,
create an object that must not exist yet (S3's ``If-None-Match: *``, GCS's
``ifGenerationMatch=0``), delete an object. Nothing is ever overwritten: a second writer
that races the first fails its create instead of replacing the first's data.

Credentials come from the store's own chain (for S3: the environment, the profile, the
instance role) or from ``storage_options`` (passed to fsspec as they are). They are
never printed: errors name the URL (without any ``user:password@`` in it) and the
store's one-line reason, never the options.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from urllib.parse import quote

from scoreviz.errors import ScorevizError

# Stores whose create-if-absent is atomic on the server: the one-writer rule rests on it.
ATOMIC_CREATE = {"s3", "s3a", "gs", "gcs"}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")
# Defaults for S3 that the caller's storage_options may change: a store that does not
# answer fails a request in about 10 s (connect, read, no retry) instead of minutes
# (s3fs's 5 tries times botocore's own), so the publisher says so and backs off.
_S3_DEFAULTS = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1, "mode": "standard"}}
_S3_TRIES = 1
# How long one call may take before it counts as failed, whatever the store's client does: s3fs's
# writes wait for an answer without end when a store accepts the connection and then says nothing.
CALL_SECONDS = 20.0
_SECONDS_PER_MB = 1.0  # and this much more per MB sent
_FILESYSTEMS: dict = {}  # (scheme, options) -> the filesystem scoreviz opened (never the caller's own)


def is_url(path) -> bool:
    """Whether ``path`` names a store through a URL scheme (``s3://...``), not a local path.
    ``file://`` URLs are local paths."""
    if not isinstance(path, str):
        return False
    match = _SCHEME.match(path)
    return bool(match) and match.group(1).lower() != "file"


def local_path(path):
    """A local path from a path or a ``file://`` URL."""
    if isinstance(path, str) and path.lower().startswith("file://"):
        return Path(path[len("file://"):])
    return Path(path)


def check_options(value, what: str) -> dict:
    """fsspec's options for a URL (credentials, endpoint): a dict or None. Never printed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScorevizError(f"{what}: storage_options must be a dict (passed to fsspec), got {type(value).__name__}")
    return value


def shown(url: str) -> str:
    """The URL as printed: without a ``user:password@`` part, without a trailing slash."""
    return _USERINFO.sub(r"\1", str(url)).rstrip("/")


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts if p]])


def cache_dir() -> Path:
    """Where scoreviz keeps local copies: ``$SCOREVIZ_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/scoreviz``, else ``~/.cache/scoreviz``."""
    if os.environ.get("SCOREVIZ_CACHE_DIR"):
        return Path(os.environ["SCOREVIZ_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scoreviz"


def local_folder(purpose: str, url: str) -> Path:
    """The local folder of a URL for ``purpose`` ("write": a Recorder's local run; "read": a
    reader's copy): the URL's parts below cache_dir()/purpose, each part made safe as a
    folder name (no '..', no separators), so every URL has its own folder."""
    scheme, _, rest = shown(url).partition("://")
    parts = [scheme.lower()] + [p for p in rest.split("/") if p]
    safe = [quote(p, safe="") if p not in (".", "..") else quote(p, safe="").replace(".", "%2E") for p in parts]
    return cache_dir() / purpose / Path(*safe)


class ObjectStore:
    """One store, addressed by a root URL; keys are paths below it ("a/b.json")."""

    def __init__(self, url: str, storage_options=None):
        self.url = url.rstrip("/")
        self.scheme = _SCHEME.match(url).group(1).lower() if _SCHEME.match(url) else ""
        try:
            import fsspec
        except ImportError:  # pragma: no cover: fsspec comes with the s3 and gcs extras
            raise ScorevizError(f"{shown(url)}: reading or writing a URL needs fsspec: pip install "
                                "'scoreviz[s3]' (or [gcs])") from None
        options = dict(storage_options or {})
        # every listing is read from the store (fsspec's listings cache would answer later reads
        # of new objects with "not found"); a read is one GET (s3fs asks for the size first otherwise)
        options.setdefault("use_listings_cache", False)
        self._read_options = {}
        if self.scheme in ("s3", "s3a"):
            config = dict(options.get("config_kwargs") or {})
            for key, value in _S3_DEFAULTS.items():
                config.setdefault(key, value)
            options["config_kwargs"] = config
            self._read_options = {"max_concurrency": 1}
        try:
            cache_key = (self.scheme, repr(sorted(options.items())))
            self.fs = _FILESYSTEMS.get(cache_key)
            if self.fs is None:  # its own instance: the tries set below do not change the caller's
                self.fs, _ = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **options)
                if self.scheme in ("s3", "s3a"):
                    self.fs.retries = _S3_TRIES
                _FILESYSTEMS[cache_key] = self.fs
            self.root = self.fs._strip_protocol(self.url)
        except ImportError as err:
            extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(self.scheme)
            hint = f"pip install 'scoreviz[{extra}]'" if extra else f"install the fsspec backend of {self.scheme}://"
            raise ScorevizError(f"{shown(url)}: no filesystem for this URL ({_first_line(err)}); {hint}") from None
        except Exception as err:  # noqa: BLE001: fsspec raises ValueError, TypeError... for bad options
            raise ScorevizError(f"{shown(url)}: cannot open the store ({type(err).__name__}: "
                                f"{_first_line(err)})") from None
        self.root = self.root.rstrip("/")

    @property
    def atomic_create(self) -> bool:
        return self.scheme in ATOMIC_CREATE

    def _call(self, fn, *args, seconds: float = CALL_SECONDS, **kwargs):
        """fn(*args, **kwargs), given up after ``seconds`` (TimeoutError) where the filesystem is
        asynchronous (s3fs, gcsfs: fsspec runs their calls with a timeout)."""
        if not getattr(self.fs, "async_impl", False):
            return fn(*args, **kwargs)
        from fsspec.exceptions import FSTimeoutError

        try:
            return fn(*args, timeout=seconds, **kwargs)
        except FSTimeoutError:
            raise TimeoutError(f"no answer in {seconds:.0f} s") from None

    def key_url(self, key: str) -> str:
        return shown(join(self.url, key))

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    # ---------------------------------------------------------------- calls

    def list(self, key: str = "") -> dict:
        """{key below ``key``: (size, etag or version, when it was written or None)} of every object
        below ``key``, read from the store now (one request per 1,000 objects). A prefix that holds
        nothing is empty."""
        path = self._path(key)
        try:
            found = self._call(self.fs.find, path, detail=True, seconds=4 * CALL_SECONDS)
        except FileNotFoundError as err:
            if _missing_bucket(err):
                raise self.failure(err, "list", key) from None
            return {}
        except Exception as err:  # noqa: BLE001
            raise self.failure(err, "list", key) from None
        start = len(self.root) + 1
        out = {}
        for name, info in found.items():
            name = name.rstrip("/")
            if info.get("type") == "directory" or not name.startswith(self.root + "/") and name != self.root:
                continue
            out[name[start:]] = (int(info.get("size") or 0), _version(info), _modified(info))
        return out

    def read(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        try:
            return self._call(self.fs.cat_file, self._path(key), seconds=4 * CALL_SECONDS, **self._read_options)
        except FileNotFoundError as err:
            if _missing_bucket(err):
                raise self.failure(err, "read", key) from None
            raise FileNotFoundError(self.key_url(key)) from None
        except Exception as err:  # noqa: BLE001
            raise self.failure(err, "read", key) from None

    def read_many(self, keys) -> dict:
        """{key: bytes} of several objects, fetched concurrently where the store allows."""
        paths = {self._path(k): k for k in keys}
        if not paths:
            return {}
        try:
            found = self._call(self.fs.cat, list(paths), on_error="return", seconds=4 * CALL_SECONDS,
                               **self._read_options)
        except Exception as err:  # noqa: BLE001
            raise self.failure(err, "read", next(iter(paths.values()))) from None
        if not isinstance(found, dict):  # one path: fsspec returns its bytes
            found = {next(iter(paths)): found}
        out = {}
        for path, value in found.items():
            key = paths.get(path.rstrip("/"), paths.get(path))
            if isinstance(value, BaseException):
                if isinstance(value, FileNotFoundError) and not _missing_bucket(value):
                    raise FileNotFoundError(self.key_url(key))
                raise self.failure(value, "read", key)
            out[key] = value
        return out

    def create(self, key: str, data: bytes) -> bool:
        """Write a new object; False (and nothing written) when one is there already."""
        try:
            self._call(self.fs.pipe_file, self._path(key), data, mode="create",
                       seconds=CALL_SECONDS + _SECONDS_PER_MB * len(data) / 1e6)
        except FileExistsError:
            return False
        except Exception as err:  # noqa: BLE001
            if _precondition_failed(err):
                return False
            raise self.failure(err, "write", key) from None
        return True

    def delete(self, keys) -> None:
        """Delete objects (those already gone are no error)."""
        paths = [self._path(k) for k in keys]
        if not paths:
            return
        try:  # one DELETE for one object (free on S3); a batch request for several
            self._call(self.fs.rm_file, paths[0]) if len(paths) == 1 else self._call(self.fs.rm, paths)
        except FileNotFoundError:
            pass
        except Exception as err:  # noqa: BLE001
            raise self.failure(err, "delete", keys[0] if keys else "") from None

    # ---------------------------------------------------------------- failures

    def failure(self, err: BaseException, what: str, key: str = "") -> ScorevizError:
        """One line: the URL, what failed, and why (credentials, bucket, network), no options."""
        where = self.key_url(key) if key else shown(self.url)
        reason = _first_line(err)
        code = _code(err)
        unreachable = False
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "AccessDenied", "403") or isinstance(err, PermissionError):
            reason = f"the store refused the credentials ({code or 'permission denied'}): check the store's " \
                     "credentials (environment, profile, role) or storage_options"
        elif _missing_bucket(err):
            reason = "no such bucket"
        elif isinstance(err, (ConnectionError, TimeoutError)) or code in ("EndpointConnectionError",
                                                                          "ConnectTimeoutError", "ReadTimeoutError"):
            reason = f"the store cannot be reached ({reason})"
            unreachable = True
        error = ScorevizError(f"{where}: cannot {what} ({reason})")
        error.unreachable = unreachable  # the network or the store, not the request: worth trying again
        return error


def _version(info: dict):
    """What changes when an object is replaced: its ETag (S3), generation (GCS), else size and time."""
    for key in ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "updated"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return None


def _modified(info: dict):
    """When the object was written (Unix seconds; the store's clock), or None: S3's LastModified,
    GCS's updated, a filesystem's mtime."""
    import datetime

    for key in ("LastModified", "updated", "mtime", "last_modified"):
        value = info.get(key)
        try:
            if isinstance(value, datetime.datetime):
                return value.timestamp()
            if isinstance(value, str) and value:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        except (ValueError, OverflowError, OSError):
            continue
    return None


def _chain(err):
    seen = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _code(err) -> str:
    """The store's error code (S3's "NoSuchBucket", "InvalidAccessKeyId"...), or ''."""
    for e in _chain(err):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        code = getattr(e, "code", None)
        if isinstance(code, (str, int)) and code:
            return str(code)
    return ""


def _missing_bucket(err) -> bool:
    return _code(err) in ("NoSuchBucket", "404 bucket") or any(
        "NoSuchBucket" in str(e) or "bucket does not exist" in str(e).lower() for e in _chain(err))


def _precondition_failed(err) -> bool:
    return _code(err) in ("PreconditionFailed", "412", "ConditionalRequestConflict") or any(
        "PreconditionFailed" in str(e) or getattr(e, "errno", None) == errno.EEXIST for e in _chain(err))


def _first_line(err) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


__all__ = ["ObjectStore", "cache_dir", "check_options", "is_url", "join", "local_folder", "local_path", "shown"]
