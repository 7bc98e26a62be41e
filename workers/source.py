"""Service sources through real git: one bare mirror per source, resolved refs pinned to full commit SHAs.

A release records the commit a ref resolved to once (``resolve_ref``); every later step works from that SHA
(``checkout``, ``read_file_at``), never from the tag again, so a tag moved after approval cannot change what ships.
The mirror fetches branches and tags with force and prune, so a moved tag resolves to its new commit on the next
release, while each resolved commit is kept reachable under ``refs/edgebot/keep/<sha>`` (outside the fetch refspecs,
so pruning never drops it and ``git gc`` never collects it) for retries and rebuilds of older releases.

git runs with argument lists (no shell), ``GIT_TERMINAL_PROMPT=0`` (a missing credential fails instead of hanging a
worker) and ``GIT_CONFIG_NOSYSTEM=1``; nothing needs a global git config. Several processes may share a cache dir:
each mirror is guarded by an ``fcntl.flock`` on a lock file beside it. Credentials embedded in a source URL are
masked in every message (the catalog refuses them: a private source names a token or deploy key reference in
``[services.X.source_auth]``, which :mod:`workers.git_auth` hands to the git commands that reach the server — fetch
and ls-remote — through their environment only, never argv or the mirror's config; anything git prints is scrubbed of
them).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workers.git_auth import GitAuth, credentials, refusal

#: Seconds one git command may take (a clone or fetch of a large repository included).
GIT_TIMEOUT = 600.0
#: Largest file :func:`read_file_at` reads by default (``settings.source_file_max_bytes``' default): a definition,
#: hzn.json or policy/pattern template is a few KiB; a hostile 20 MB one would cost the worker ~900 MB to parse.
SOURCE_FILE_MAX_BYTES = 1024 * 1024

_REF = re.compile(r"[A-Za-z0-9._/+-]+\Z")
_SHA = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
# bounded repeats: unbounded ones made a 100 kB line of letters (a build log, git output) cost O(n²) — 16 s
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}://)[^/@\s]{1,4096}@")
_TRANSIENT = (
    "could not resolve host", "connection timed out", "connection refused", "connection reset", "timed out",
    "failed to connect", "network is unreachable", "no route to host", "early eof", "the remote end hung up",
    "rpc failed", "unexpected disconnect", "gnutls_handshake", "temporary failure", "returned error: 5",
    "broken pipe",
)


class SourceError(Exception):
    """A source problem a user can act on. ``transient`` is True for network failures worth a retry."""

    def __init__(self, message: str, *, transient: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.refused = refused
        """The server refused the credentials or the host key did not match."""


def redact(text: str) -> str:
    """Mask ``user:password@`` in any URL inside ``text``."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _normalize(source: str) -> str:
    """Local paths become absolute (the mirror's remote must not depend on the worker's cwd); URLs stay as given."""
    if not source or source.startswith("-"):
        raise SourceError(f"source {redact(source)!r} is not a git URL or path: fix the catalog")
    if "://" in source or re.match(r"[^/]+@[^/:]+:", source):
        return source
    return str(Path(source).expanduser().resolve())


_DROPPED_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG_PARAMETERS", "GIT_CURL_VERBOSE",
                "GIT_TRACE_REDACT")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _DROPPED_ENV and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_", "GIT_TRACE"))
           and k != "GIT_CONFIG_COUNT"}  # no tracing of headers, no configuration but ours through the environment
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C", "LANG": "C"})
    if extra:
        env.update(extra)
        if "GIT_SSH_COMMAND" in extra:
            env.pop("SSH_AUTH_SOCK", None)
            env.pop("GIT_SSH", None)
    return env


def _git(args: list[str], *, cwd: Path | None = None, check: bool = True, what: str = "git",
         auth: GitAuth | None = None, source: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run git. With ``source``, the command reaches that server and gets ``auth``'s credentials (environment only);
    its output is scrubbed of them before anything reads it."""
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "advice.detachedHead=false", *args]
    with credentials(auth if source else None, source) as creds:
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=_env(creds.env), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=GIT_TIMEOUT, check=False)
        except FileNotFoundError:
            raise SourceError("git is not installed on this worker: install git") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"{what} took longer than {GIT_TIMEOUT:.0f}s", transient=True) from None
    if creds.scrub:
        proc.stderr = _scrub(proc.stderr, creds.scrub)
        proc.stdout = _scrub(proc.stdout, creds.scrub)
    if check and proc.returncode != 0:
        raise _failure(what, proc, auth=auth, source=source)
    return proc


def _scrub(data: bytes, secrets: tuple[str, ...]) -> bytes:
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode(), b"***")
    return data


def _failure(what: str, proc: subprocess.CompletedProcess[bytes], *, auth: GitAuth | None = None,
             source: str = "") -> SourceError:
    detail = redact(proc.stderr.decode("utf-8", "replace").strip())
    lines = [ln for ln in detail.splitlines() if ln.strip() and not ln.startswith("hint:")]
    last = lines[-1] if lines else f"exit status {proc.returncode}"
    lowered = detail.lower()
    refused = refusal(auth, source, detail) if source else None
    if refused:
        return SourceError(f"{what} failed: {refused}", refused=True)
    transient = any(word in lowered for word in _TRANSIENT) and "not found" not in lowered
    if "terminal prompts disabled" in lowered or "authentication failed" in lowered or "permission denied" in lowered:
        return SourceError(f"{what} failed: the git server refused access ({last}): give the worker read access "
                           "([services.X.source_auth] with a token or a deploy key, docs/configuration.md)",
                           refused=True)
    return SourceError(f"{what} failed: {last}", transient=transient)


# -- the mirror --------------------------------------------------------------------------------------------------------

def _mirror_path(source: str, cache_dir: Path) -> Path:
    return cache_dir / (hashlib.sha256(source.encode("utf-8")).hexdigest() + ".git")


@contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    """Exclusive use of one mirror across threads and processes (flock on a separate open file)."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.with_suffix(".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _ensure_mirror(source: str, mirror: Path) -> None:
    """Create the bare mirror (under the lock). Built aside and renamed, so a crash never leaves half a mirror."""
    if (mirror / "HEAD").exists():
        return
    shutil.rmtree(mirror, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=mirror.name + ".", suffix=".tmp", dir=mirror.parent))
    try:
        _git(["init", "--quiet", "--bare", str(tmp)], what="git init")
        for key, value in (("remote.origin.url", source),
                           ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
                           ("gc.pruneExpire", "never"),
                           ("core.logAllRefUpdates", "false")):
            _git(["--git-dir", str(tmp), "config", key, value], what="git config")
        _git(["--git-dir", str(tmp), "config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"],
             what="git config")
        tmp.rename(mirror)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fetch(source: str, mirror: Path, auth: GitAuth | None) -> None:
    """Branches and tags, force-updated (a moved tag follows the remote) and pruned. Refused credentials are read
    again once (rotated in Vault since they were cached)."""
    args = ["--git-dir", str(mirror), "fetch", "--quiet", "--prune", "--force", "--no-write-fetch-head", "origin"]
    try:
        _git(args, what=f"fetching {redact(source)}", auth=auth, source=source)
    except SourceError as exc:
        if auth is None or not exc.refused or "host key of" in str(exc):  # a pinned key is not re-read
            raise
        auth.forget()
        _git(args, what=f"fetching {redact(source)}", auth=auth, source=source)


def _has_commit(mirror: Path, sha: str) -> bool:
    proc = _git(["--git-dir", str(mirror), "cat-file", "-e", f"{sha}^{{commit}}"], check=False)
    return proc.returncode == 0


def _keep(mirror: Path, sha: str) -> None:
    _git(["--git-dir", str(mirror), "update-ref", f"refs/edgebot/keep/{sha}", sha], what="git update-ref")


def _require_sha(sha: str) -> None:
    if not _SHA.match(sha):
        raise SourceError(f"{sha!r} is not a full commit SHA (40 or 64 lowercase hex characters)")


def _with_commit(source: str, sha: str, cache_dir: Path, auth: GitAuth | None) -> Path:
    """The mirror, holding ``sha`` (fetched if missing). Call under the mirror's lock."""
    mirror = _mirror_path(source, cache_dir)
    _ensure_mirror(source, mirror)
    if not _has_commit(mirror, sha):
        _fetch(source, mirror, auth)
        if not _has_commit(mirror, sha):
            raise SourceError(
                f"commit {sha[:12]} is not in {redact(source)}: it was removed by a force-push or never pushed; "
                "publish again from a ref that exists"
            )
        _keep(mirror, sha)
    return mirror


# -- public API ------------------------------------------------------------------------------------------------------

def resolve_ref(source: str, ref: str, cache_dir: Path, *, auth: GitAuth | None = None) -> str:
    """Fetch ``source`` into its mirror and return the full SHA of the commit ``ref`` (tag, branch or SHA) names.

    ``auth``: a private source's credentials (:func:`workers.git_auth.git_auth_for`), used to fetch."""
    if not ref or ref.startswith("-") or not _REF.match(ref):
        raise SourceError(
            f"ref {ref!r} is not allowed: use letters, digits and . _ / + - only, not starting with -"
        )
    source = _normalize(source)
    mirror = _mirror_path(source, Path(cache_dir))
    with _locked(mirror):
        _ensure_mirror(source, mirror)
        _fetch(source, mirror, auth)
        proc = _git(["--git-dir", str(mirror), "rev-parse", "--verify", "--quiet", "--end-of-options",
                     f"{ref}^{{commit}}"], check=False)
        sha = proc.stdout.decode("ascii", "replace").strip()
        if proc.returncode != 0 or not _SHA.match(sha):
            raise SourceError(
                f"ref {ref} not found in {redact(source)}: push the tag or fix the catalog's ref template"
            )
        _keep(mirror, sha)
    return sha


def checkout(source: str, sha: str, dest: Path, cache_dir: Path, *, auth: GitAuth | None = None) -> Path:
    """Check out exactly commit ``sha`` (detached, never by tag name) into ``dest``, which must be absent or empty.

    ``dest`` gets its own repository whose objects are hard links into the mirror where possible (fast, and safe:
    git objects are immutable). Returns ``dest``.
    """
    _require_sha(sha)
    source = _normalize(source)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise SourceError(f"cannot check out into {dest}: the directory is not empty")
    mirror = _mirror_path(source, Path(cache_dir))
    with _locked(mirror):
        _with_commit(source, sha, Path(cache_dir), auth)
        if dest.exists():
            dest.rmdir()
        dest.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--quiet", "--no-checkout", "--local", "--", str(mirror), str(dest)],
             what=f"copying {sha[:12]} of {redact(source)}")
    _git(["-C", str(dest), "checkout", "--quiet", "--force", "--detach", sha], what=f"checking out {sha[:12]}")
    head = _git(["-C", str(dest), "rev-parse", "HEAD"], what="git rev-parse").stdout.decode().strip()
    if head != sha:
        raise SourceError(f"checked out {head[:12]} instead of {sha[:12]} in {dest}")
    _git(["-C", str(dest), "remote", "set-url", "origin", redact(source)], what="git remote")
    return dest


def read_file_at(source: str, sha: str, path: str, cache_dir: Path,
                 max_bytes: int = SOURCE_FILE_MAX_BYTES, *, auth: GitAuth | None = None) -> str | None:
    """The text of ``path`` at commit ``sha`` (``git show sha:path``), or None when no such file exists there.

    The blob's size is read first (``git cat-file -s``): a file larger than ``max_bytes`` is refused with a
    :class:`SourceError` naming it, its size and the cap, before a byte of it is read.
    """
    clean = path.strip().removeprefix("./")
    data = _read_blob(source, sha, path, cache_dir, max_bytes, auth=auth)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{clean} at commit {sha[:12]} is not UTF-8 text: save it as UTF-8") from None


def read_blob_at(source: str, sha: str, path: str, cache_dir: Path, max_bytes: int, *,
                 auth: GitAuth | None = None, setting: str = "source_file_max_bytes") -> bytes | None:
    """The bytes of the regular file ``path`` at commit ``sha``, or None when there is none; a symlink there is
    refused (git stores its target as a blob: it could name a file outside the repository)."""
    return _read_blob(source, sha, path, cache_dir, max_bytes, auth=auth, setting=setting, no_symlink=True)


def _read_blob(source: str, sha: str, path: str, cache_dir: Path, max_bytes: int, *, auth: GitAuth | None,
               setting: str = "source_file_max_bytes", no_symlink: bool = False) -> bytes | None:
    _require_sha(sha)
    clean = path.strip().removeprefix("./")
    parts = clean.split("/")
    if not clean or clean.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SourceError(f"path {path!r} must be relative to the repository root, without . or .. parts")
    source = _normalize(source)
    mirror = _mirror_path(source, Path(cache_dir))
    with _locked(mirror):
        _with_commit(source, sha, Path(cache_dir), auth)
        spec = f"{sha}:{clean}"
        kind = _git(["--git-dir", str(mirror), "cat-file", "-t", spec], check=False)
        if kind.returncode != 0 or kind.stdout.strip() != b"blob":
            return None
        if no_symlink:
            entry = _git(["--git-dir", str(mirror), "ls-tree", sha, "--", clean], what=f"listing {clean}").stdout
            if entry.startswith(b"120000 "):
                raise SourceError(f"{clean} at commit {sha[:12]} is a symlink: edgebot reads only regular files "
                                  "from the repository; commit the file itself")
        size = int(_git(["--git-dir", str(mirror), "cat-file", "-s", spec], what=f"sizing {clean}").stdout)
        if size > max_bytes:
            raise SourceError(f"{clean} at commit {sha[:12]} is {size} bytes, over the {max_bytes}-byte cap for "
                              f"files edgebot reads from the repository (setting {setting}): "
                              "shrink the file")
        data: bytes = _git(["--git-dir", str(mirror), "cat-file", "blob", spec], what=f"reading {clean}").stdout
    return data


def same_tree(source: str, first: str, second: str, path: str, cache_dir: Path, *,
              leaving_out: tuple[str, ...] = ()) -> bool:
    """Whether ``path`` (a directory or file of the repository, "." for all of it) has the same content at commits
    ``first`` and ``second`` — every blob the same, compared by object id and mode — leaving out the files
    ``leaving_out`` (repository paths, e.g. the service policy file). Reads the local mirror only: False when either
    commit is not there, never a fetch."""
    _require_sha(first)
    _require_sha(second)
    mirror = _mirror_path(_normalize(source), cache_dir)
    skip = {p.strip("/") for p in leaving_out}

    def listing(sha: str) -> list[str] | None:
        proc = _git(["--git-dir", str(mirror), "ls-tree", "-r", "--full-tree", sha, "--", path.strip("/") or "."],
                    check=False)
        if proc.returncode != 0:
            return None
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        return [line for line in lines if line.split("\t", 1)[-1] not in skip]

    if not (mirror / "HEAD").exists():
        return False
    with _locked(mirror):
        before, after = listing(first), listing(second)
    return before is not None and before == after
def ls_remote(source: str, *, auth: GitAuth | None = None) -> str:
    """``git ls-remote --heads --tags`` of ``source`` with its credentials (``config check``); its output."""
    source = _normalize(source)
    proc = _git(["ls-remote", "--heads", "--tags", "--", source], what=f"listing {redact(source)}", auth=auth,
                source=source)
    return proc.stdout.decode("utf-8", "replace")
