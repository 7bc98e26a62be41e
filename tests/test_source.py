"""workers.source against real git repositories made here: a bare origin, a working clone that pushes commits and
tags, and edgebot's mirror cache in its own directory."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from workers.source import SourceError, checkout, read_blob_at, read_file_at, resolve_ref

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "Test",
           "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "test@example.com"}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


class Origin:
    """A bare origin repository and a working clone to push to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        git(root, "init", "--quiet", "--bare", "-b", "main", str(self.bare))
        git(root, "init", "--quiet", "-b", "main", str(self.work))
        git(self.work, "remote", "add", "origin", str(self.bare))

    def commit(self, files: dict[str, str], message: str = "change", *, amend: bool = False) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        git(self.work, "add", "--all")
        git(self.work, "commit", "--quiet", "-m", message, *(["--amend"] if amend else []))
        return git(self.work, "rev-parse", "HEAD")

    def tag(self, name: str, *, force: bool = False) -> None:
        git(self.work, "tag", *(["-f"] if force else []), "-a", name, "-m", name)

    def push(self, *, force: bool = False) -> None:
        git(self.work, "push", "--quiet", *(["--force"] if force else []), "origin", "main")
        git(self.work, "push", "--quiet", *(["--force"] if force else []), "--tags", "origin")


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    repo = Origin(tmp_path)
    repo.commit({"horizon/service.definition.json": '{"version": "1"}\n', "Dockerfile.amd64": "FROM scratch\n"},
                "first")
    repo.tag("v1.0.0")
    repo.push()
    return repo


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_resolve_a_tag_a_branch_and_a_sha(origin, cache):
    first = git(origin.work, "rev-parse", "HEAD")
    second = origin.commit({"README": "two\n"}, "second")
    origin.push()
    assert resolve_ref(str(origin.bare), "v1.0.0", cache) == first  # annotated tag → its commit
    assert resolve_ref(str(origin.bare), "main", cache) == second
    assert resolve_ref(str(origin.bare), first, cache) == first
    assert resolve_ref(f"file://{origin.bare}", "main", cache) == second
    assert len(list(cache.glob("*.git"))) == 2  # one mirror per source


def test_a_moved_tag_resolves_to_the_new_commit_but_the_old_sha_still_checks_out(origin, cache, tmp_path):
    old = resolve_ref(str(origin.bare), "v1.0.0", cache)
    # Rewrite history: the old commit is no longer reachable from anything in origin.
    new = origin.commit({"horizon/service.definition.json": '{"version": "2"}\n'}, "rewritten", amend=True)
    origin.tag("v1.0.0", force=True)
    origin.push(force=True)
    assert new != old

    assert resolve_ref(str(origin.bare), "v1.0.0", cache) == new
    # Even a gc that prunes every unreachable object keeps the commit a release resolved (refs/edgebot/keep/<sha>).
    (mirror,) = cache.glob("*.git")
    git(mirror, "gc", "--quiet", "--prune=now")
    tree = checkout(str(origin.bare), old, tmp_path / "build-old", cache)
    assert (tree / "horizon/service.definition.json").read_text() == '{"version": "1"}\n'
    assert git(tree, "rev-parse", "HEAD") == old
    assert git(tree, "status", "--porcelain") == ""
    assert read_file_at(str(origin.bare), old, "horizon/service.definition.json", cache) == '{"version": "1"}\n'
    assert read_file_at(str(origin.bare), new, "horizon/service.definition.json", cache) == '{"version": "2"}\n'

    # A mirror that never saw the old commit cannot invent it: the message says why.
    with pytest.raises(SourceError, match=f"commit {old[:12]} is not in {origin.bare}: it was removed by a force-push"):
        checkout(str(origin.bare), old, tmp_path / "elsewhere", tmp_path / "fresh-cache")


def test_checkout_fetches_a_sha_the_mirror_does_not_have_yet(origin, cache, tmp_path):
    resolve_ref(str(origin.bare), "v1.0.0", cache)
    later = origin.commit({"Dockerfile.amd64": "FROM scratch\nCOPY . /\n"}, "later")
    origin.push()
    tree = checkout(str(origin.bare), later, tmp_path / "ctx", cache)
    assert (tree / "Dockerfile.amd64").read_text() == "FROM scratch\nCOPY . /\n"
    assert git(tree, "rev-parse", "HEAD") == later
    with pytest.raises(SourceError, match="not empty"):
        checkout(str(origin.bare), later, tmp_path / "ctx", cache)
    with pytest.raises(SourceError, match="not a full commit SHA"):
        checkout(str(origin.bare), "v1.0.0", tmp_path / "by-tag", cache)


def test_a_missing_ref_names_the_ref_the_source_and_the_fix(origin, cache):
    with pytest.raises(SourceError) as exc:
        resolve_ref(str(origin.bare), "v1.2.3", cache)
    assert str(exc.value) == f"ref v1.2.3 not found in {origin.bare}: push the tag or fix the catalog's ref template"
    assert exc.value.transient is False


@pytest.mark.parametrize("ref", ["", "-v1", "--upload-pack=touch /tmp/x", "v1 2", "v1;id", "$(id)", "v1\n", "a:b",
                                 "HEAD@{1}", "v1~1", "main^"])
def test_bad_refs_are_refused_before_git_runs(origin, cache, ref):
    with pytest.raises(SourceError, match="is not allowed"):
        resolve_ref(str(origin.bare), ref, cache)
    assert not cache.exists()  # refused before any mirror was made


def test_read_file_at_returns_text_or_none(origin, cache):
    sha = resolve_ref(str(origin.bare), "v1.0.0", cache)
    assert read_file_at(str(origin.bare), sha, "horizon/service.definition.json", cache) == '{"version": "1"}\n'
    assert read_file_at(str(origin.bare), sha, "./Dockerfile.amd64", cache) == "FROM scratch\n"
    assert read_file_at(str(origin.bare), sha, "horizon/hzn.json", cache) is None
    assert read_file_at(str(origin.bare), sha, "horizon", cache) is None  # a directory is not a file
    for bad in ("../etc/passwd", "/etc/passwd", "horizon/../x"):
        with pytest.raises(SourceError, match="relative to the repository root"):
            read_file_at(str(origin.bare), sha, bad, cache)


def test_read_blob_at_reads_bytes_and_refuses_symlinks_and_oversize(origin, cache):
    (origin.work / "operator").mkdir()
    (origin.work / "operator" / "op.tar.gz").write_bytes(b"\x1f\x8b\x00binary")
    (origin.work / "operator" / "link.tar.gz").symlink_to("/etc/passwd")
    (origin.work / "linked").symlink_to("operator")
    sha = origin.commit({}, "archives")
    origin.push()
    source = str(origin.bare)
    assert read_blob_at(source, sha, "operator/op.tar.gz", cache, 100) == b"\x1f\x8b\x00binary"
    with pytest.raises(SourceError, match=r"operator/link\.tar\.gz at commit .* is a symlink"):
        read_blob_at(source, sha, "operator/link.tar.gz", cache, 100)
    assert read_blob_at(source, sha, "linked/op.tar.gz", cache, 100) is None  # never through a symlinked dir
    with pytest.raises(SourceError, match=r"over the 5-byte cap .*\(setting cluster_archive_max_bytes\)"):
        read_blob_at(source, sha, "operator/op.tar.gz", cache, 5, setting="cluster_archive_max_bytes")


def test_an_unreachable_source_is_transient_and_credentials_are_masked(cache):
    source = "http://builder:s3cr3t-t0ken@127.0.0.1:9/team/hello.git"
    with pytest.raises(SourceError) as exc:
        resolve_ref(source, "v1.0.0", cache)
    assert exc.value.transient is True
    assert "s3cr3t-t0ken" not in str(exc.value) and "http://***@127.0.0.1:9/team/hello.git" in str(exc.value)


def test_a_source_that_is_not_a_repository_is_permanent(tmp_path, cache):
    with pytest.raises(SourceError) as exc:
        resolve_ref(str(tmp_path / "nothing-here"), "v1.0.0", cache)
    assert exc.value.transient is False
    assert "nothing-here" in str(exc.value)


def test_concurrent_resolves_from_threads_share_one_mirror(origin, cache):
    start = threading.Barrier(8)

    def resolve(_: int) -> str:
        start.wait(timeout=30)
        return resolve_ref(str(origin.bare), "v1.0.0", cache)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(resolve, range(8)))
    assert set(results) == {git(origin.work, "rev-parse", "v1.0.0^{commit}")}
    assert len(list(cache.glob("*.git"))) == 1
    assert not list(cache.glob("*.tmp"))  # no half-made mirror left behind


def test_concurrent_resolves_and_reads_from_processes(origin, cache):
    expected = git(origin.work, "rev-parse", "v1.0.0^{commit}")
    with ProcessPoolExecutor(max_workers=4) as pool:
        shas = list(pool.map(resolve_ref, [str(origin.bare)] * 6, ["v1.0.0"] * 6, [cache] * 6))
        texts = list(pool.map(read_file_at, [str(origin.bare)] * 4, [expected] * 4, ["Dockerfile.amd64"] * 4,
                              [cache] * 4))
    assert shas == [expected] * 6
    assert texts == ["FROM scratch\n"] * 4


# -- hostile repositories: every file read from git is size-capped before it is read (issue 12) --------------------

def test_an_oversized_file_is_refused_by_its_blob_size_before_it_is_read(origin, cache):
    import tracemalloc

    big = "{" + '"pad": "' + "x" * (20 * 1024 * 1024) + '"}\n'  # a 20 MB service.definition.json
    sha = origin.commit({"horizon/service.definition.json": big, "horizon/deployment.policy.json": big}, "huge")
    origin.push()
    tracemalloc.start()
    try:
        with pytest.raises(SourceError) as refused:
            read_file_at(str(origin.bare), sha, "horizon/service.definition.json", cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = len(big.encode())
    assert str(refused.value) == (
        f"horizon/service.definition.json at commit {sha[:12]} is {size} bytes, over the 1048576-byte cap for files "
        "edgebot reads from the repository (setting source_file_max_bytes): shrink the file")
    assert refused.value.transient is False
    assert peak < 2 * 1024 * 1024, peak  # the blob itself was never read into the worker
    # the cap is the caller's to set (prepare passes settings.source_file_max_bytes); the policy template path
    # (workers.rollout_create) goes through the same function and its default cap
    assert read_file_at(str(origin.bare), sha, "horizon/service.definition.json", cache, max_bytes=size) == big
    with pytest.raises(SourceError, match=r"horizon/deployment.policy.json at commit .* over the 1000-byte cap"):
        read_file_at(str(origin.bare), sha, "horizon/deployment.policy.json", cache, max_bytes=1000)


def test_a_file_at_exactly_the_cap_is_read(origin, cache):
    sha = origin.commit({"horizon/hzn.json": "x" * 99 + "\n"}, "at the cap")
    origin.push()
    assert read_file_at(str(origin.bare), sha, "horizon/hzn.json", cache, max_bytes=100) == "x" * 99 + "\n"
    with pytest.raises(SourceError, match=r"is 100 bytes, over the 99-byte cap"):
        read_file_at(str(origin.bare), sha, "horizon/hzn.json", cache, max_bytes=99)


def test_same_tree_compares_build_inputs_leaving_out_the_service_policy_file(origin, cache):
    """A change of the service policy file alone leaves the build context the same (a publish needs no rebuild);
    any other change, a mode change included, does not; a commit the mirror does not have is never "the same"."""
    from workers.source import same_tree

    first = resolve_ref(str(origin.bare), "v1.0.0", cache)
    policy_only = origin.commit({"horizon/service.policy.json": '{"properties": []}\n'}, "policy")
    code = origin.commit({"index.html": "new\n"}, "code")
    origin.push()
    resolve_ref(str(origin.bare), "main", cache)  # the mirror has them all now
    policy = ("horizon/service.policy.json",)
    assert same_tree(str(origin.bare), first, policy_only, ".", cache, leaving_out=policy)
    assert not same_tree(str(origin.bare), first, policy_only, ".", cache), "without leaving it out: a change"
    assert not same_tree(str(origin.bare), policy_only, code, ".", cache, leaving_out=policy)
    assert same_tree(str(origin.bare), policy_only, code, "horizon", cache), "a sub-path compares only itself"
    (origin.work / "Dockerfile.amd64").chmod(0o755)
    git(origin.work, "commit", "--quiet", "-am", "mode")
    origin.push()
    mode = resolve_ref(str(origin.bare), "main", cache)
    assert not same_tree(str(origin.bare), code, mode, ".", cache, leaving_out=policy)
    assert not same_tree(str(origin.bare), code, "f" * 40, ".", cache, leaving_out=policy)
