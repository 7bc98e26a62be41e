"""The buildah builder (workers.buildah) with the real ``buildah`` CLI and the TLS + htpasswd registry.

BuildKit-syntax Dockerfiles (``RUN --mount=type=cache`` / ``--mount=type=secret``) build and push; a secret's value
is in no layer of the exported image (every blob of an OCI archive scanned) and not in the log; build args reach
``RUN`` steps; an arm64 build runs its ``RUN`` step under QEMU and its config says arm64; a second worker with an
empty store reuses the first one's layers through the registry cache. What was pushed is read back from the
registry API. buildah is installed by scripts/install-system-deps.sh: these tests do not skip.
"""

from __future__ import annotations

import gzip
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebot.build_inputs import parse_build
from sandbox.processes import Registry, busybox_path
from workers.buildah import BuildahBuilder, BuildahOptions, RegistryAccess, cert_dir
from workers.images import BuildFailed, PushFailed, WrongArchitecture, credentials_refused

BUSYBOX_CACHE = Path(os.environ.get("EDGEBOT_BUSYBOX_CACHE", "/var/cache/edgebot/busybox"))


def _arm64_busybox(into: Path) -> Path:
    """Debian's arm64 busybox-static: from the cache scripts/install-system-deps.sh fills, else downloaded."""
    cached = BUSYBOX_CACHE / "arm64" / "busybox"
    if cached.is_file():
        return cached
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "-q", "busybox-static:arm64"], cwd=into, check=True, capture_output=True)
    deb = next(into.glob("busybox-static_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into / "root")], check=True)
    return into / "root" / "bin" / "busybox"


@pytest.fixture
def make_builder(tmp_path: Path, registry: Registry, registry_users: dict[str, str]
                 ) -> Callable[..., BuildahBuilder]:
    """``make_builder(name="a", password=None)``: a builder with a store of its own (a build worker)."""
    certs = cert_dir(tmp_path / "certs", ca_pem=registry.ca_path.read_text(), certs_d=None)

    def make(name: str = "a", password: str | None = None) -> BuildahBuilder:
        pw = registry_users["pusher"] if password is None else password
        access = RegistryAccess(host=registry.address, credentials=lambda: ("pusher", pw), cert_dir=certs)
        return BuildahBuilder(BuildahOptions(storage=tmp_path / f"store-{name}", timeout=600), access)

    return make


def _context(tmp_path: Path, dockerfile: str, busybox: Path | str | None = None) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    shutil.copy(busybox or busybox_path(), context / "busybox")
    return context


def _blobs(builder: BuildahBuilder, tag: str, tmp_path: Path) -> list[bytes]:
    """Every blob (layers uncompressed, config, manifests) of ``tag`` exported as an OCI archive."""
    archive = tmp_path / "image.tar"
    builder.export(tag, archive)
    blobs = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if member.isfile() and member.name.startswith("blobs/"):
                handle = outer.extractfile(member)
                assert handle is not None
                data = handle.read()
                blobs.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return blobs


def _file_in_image(blobs: list[bytes], name: str) -> bytes:
    """The content of ``name`` in the last layer that has it."""
    found = None
    for blob in blobs:
        try:
            with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
                for member in layer.getmembers():
                    if member.name.lstrip("./") == name and member.isfile():
                        handle = layer.extractfile(member)
                        assert handle is not None
                        found = handle.read()
        except tarfile.ReadError:
            continue  # the config, a manifest
    assert found is not None, f"{name} is in no layer"
    return found


CACHE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN --mount=type=cache,target=/cache ["/bin/busybox", "sh", "-c", \
"/bin/busybox mkdir -p /etc && /bin/busybox echo built >> /cache/runs && /bin/busybox cp /cache/runs /etc/runs"]
"""


def test_cache_mount_dockerfile_builds_and_pushes(make_builder: Callable[..., BuildahBuilder], registry: Registry,
                                                  tmp_path: Path) -> None:
    builder = make_builder()
    repository = f"{registry.address}/edge/bud_cache"
    built = builder.build(context_dir=_context(tmp_path, CACHE_DOCKERFILE), root=tmp_path / "ctx",
                          dockerfile="Dockerfile", tag=f"{repository}:1.0.0", arch="amd64",
                          labels={"org.opencontainers.image.revision": "abc123"})
    assert built.architecture == "amd64" and built.image_id.startswith("sha256:")
    digest = builder.push(built.tag, f"{repository}:1.0.0")
    got, manifest = registry.manifest("edge/bud_cache", "1.0.0")
    assert got == digest
    config = registry.config_blob("edge/bud_cache", manifest)
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert "io.edgebot.arch" not in (config["config"].get("Labels") or {}), "the arch is the config's, not a label"
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == "abc123"
    assert registry.manifest("edge/bud_cache", digest, user="puller")[0] == digest


def test_secret_is_in_no_layer_and_not_in_the_log(make_builder: Callable[..., BuildahBuilder], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "tmp"  # this test's own temp dir: another process's edgebot-buildah-* in /tmp is not ours
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    value = "tok-" + secrets.token_hex(16)
    dockerfile = """\
FROM scratch
COPY busybox /bin/busybox
RUN --mount=type=secret,id=api_token ["/bin/busybox", "sh", "-c", \
"/bin/busybox cat /run/secrets/api_token; /bin/busybox mkdir -p /etc; \
/bin/busybox wc -c < /run/secrets/api_token > /etc/len"]
"""
    builder = make_builder()
    built = builder.build(context_dir=_context(tmp_path, dockerfile), root=tmp_path / "ctx", dockerfile="Dockerfile",
                          tag="localhost/edgebot-test/secret:1", arch="amd64", secrets={"api_token": value})
    assert not list(temp.glob("edgebot-buildah-*")), "the secret's temp dir is gone"
    assert "***" in "\n".join(built.log_tail), "the RUN step printed the secret; the log shows it scrubbed"
    assert not any(value in line for line in built.log_tail)
    blobs = _blobs(builder, built.tag, tmp_path)
    assert _file_in_image(blobs, "etc/len").strip() == str(len(value)).encode(), "the secret was mounted"
    assert not any(value.encode() in blob for blob in blobs), "the secret's value is in the image"


def test_build_args_reach_the_build(make_builder: Callable[..., BuildahBuilder], tmp_path: Path) -> None:
    dockerfile = """\
FROM scratch
COPY busybox /bin/busybox
ARG VERSION
ARG GREETING=unset
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /etc && /bin/busybox echo \\"$GREETING $VERSION\\" > /etc/args"]
"""
    inputs = parse_build("services.hello.build", {"builder": "buildah", "args": {
        "VERSION": "{version}-{arch}-{commit}", "GREETING": "hello"}})
    args = inputs.build_args(version="1.2.3", arch="amd64", commit="abc123")
    builder = make_builder()
    built = builder.build(context_dir=_context(tmp_path, dockerfile), root=tmp_path / "ctx", dockerfile="Dockerfile",
                          tag="localhost/edgebot-test/args:1", arch="amd64", build_args=args)
    assert _file_in_image(_blobs(builder, built.tag, tmp_path), "etc/args") == b"hello 1.2.3-amd64-abc123\n"


def test_arm64_build_runs_its_run_step_under_qemu(make_builder: Callable[..., BuildahBuilder], registry: Registry,
                                                   tmp_path: Path) -> None:
    dockerfile = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /etc && /bin/busybox uname -m > /etc/machine"]
"""
    builder = make_builder()
    repository = f"{registry.address}/edge/bud_arm64"
    context = _context(tmp_path, dockerfile, _arm64_busybox(tmp_path / "deb"))
    built = builder.build(context_dir=context, root=context, dockerfile="Dockerfile", tag=f"{repository}:1",
                          arch="arm64")
    assert built.architecture == "arm64"
    assert _file_in_image(_blobs(builder, built.tag, tmp_path), "etc/machine") == b"aarch64\n"
    builder.push(built.tag, f"{repository}:1")
    _, manifest = registry.manifest("edge/bud_arm64", "1")
    assert registry.config_blob("edge/bud_arm64", manifest)["architecture"] == "arm64"


def test_second_worker_reuses_layers_through_the_registry_cache(make_builder: Callable[..., BuildahBuilder],
                                                                registry: Registry, tmp_path: Path) -> None:
    dockerfile = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /etc && /bin/busybox head -c 16 /dev/urandom | \
/bin/busybox od -An -tx1 > /etc/random"]
"""
    context = _context(tmp_path, dockerfile)
    cache = f"{registry.address}/edge/bud_layers-cache"
    first, second = make_builder("first"), make_builder("second")  # two stores: two build workers
    one = first.build(context_dir=context, root=context, dockerfile="Dockerfile", tag="localhost/t/layers:1",
                      arch="amd64", cache=cache)
    two = second.build(context_dir=context, root=context, dockerfile="Dockerfile", tag="localhost/t/layers:2",
                       arch="amd64", cache=cache)
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    random_one = _file_in_image(_blobs(first, one.tag, tmp_path / "1"), "etc/random")
    random_two = _file_in_image(_blobs(second, two.tag, tmp_path / "2"), "etc/random")
    assert random_one == random_two, "the second worker ran the RUN step again instead of reusing its layer"


def test_failed_build_raises_with_the_log_tail(make_builder: Callable[..., BuildahBuilder], tmp_path: Path) -> None:
    dockerfile = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "echo about to fail; exit 3"]
"""
    with pytest.raises(BuildFailed) as info:
        make_builder().build(context_dir=_context(tmp_path, dockerfile), root=tmp_path / "ctx",
                             dockerfile="Dockerfile", tag="localhost/edgebot-test/fails:1", arch="amd64",
                             log_lines=10)
    assert "exit status 3" in str(info.value)
    assert any("about to fail" in line for line in info.value.log_tail) and len(info.value.log_tail) <= 10


def test_symlinked_dockerfile_out_of_the_checkout_is_refused(make_builder: Callable[..., BuildahBuilder],
                                                             tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").symlink_to("/etc/passwd")
    with pytest.raises(BuildFailed, match="outside the checkout"):
        make_builder().build(context_dir=context, root=context, dockerfile="Dockerfile", tag="localhost/t/x:1",
                             arch="amd64")


def test_refused_credential_is_a_permanent_scrubbed_push_failure(make_builder: Callable[..., BuildahBuilder],
                                                                 registry: Registry, tmp_path: Path) -> None:
    good = make_builder()
    built = good.build(context_dir=_context(tmp_path, CACHE_DOCKERFILE), root=tmp_path / "ctx",
                       dockerfile="Dockerfile", tag=f"{registry.address}/edge/bud_refused:1", arch="amd64")
    wrong = "wrong-" + secrets.token_hex(8)
    bad = make_builder("a", password=wrong)  # the same store, another credential
    with pytest.raises(PushFailed) as info:
        bad.push(built.tag, f"{registry.address}/edge/bud_refused:1")
    assert not info.value.transient and credentials_refused(info.value)
    assert wrong not in str(info.value) and not any(wrong in line for line in info.value.log_tail)


def test_unreachable_registry_is_a_transient_push_failure(make_builder: Callable[..., BuildahBuilder],
                                                          tmp_path: Path) -> None:
    builder = make_builder()
    built = builder.build(context_dir=_context(tmp_path, CACHE_DOCKERFILE), root=tmp_path / "ctx",
                          dockerfile="Dockerfile", tag="localhost/edgebot-test/unreach:1", arch="amd64")
    with pytest.raises(PushFailed) as info:
        builder.push(built.tag, "127.0.0.1:9/edge/nowhere:1")  # discard port: nothing listens
    assert info.value.transient, info.value.log_tail


def test_symlink_out_of_the_context_copies_nothing_of_the_host(make_builder: Callable[..., BuildahBuilder],
                                                               tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("HOST-ONLY-" + secrets.token_hex(8))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "absolute").symlink_to(host_file)
    (context / "relative").symlink_to(os.path.relpath(host_file, context / "sub"))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY absolute /a\nCOPY relative /b\n")
    with pytest.raises(BuildFailed) as info:  # buildah copies inside the context's root: the target is not there
        make_builder().build(context_dir=context, root=tmp_path, dockerfile="Dockerfile", tag="localhost/t/sym:1",
                             arch="amd64", log_lines=5)
    assert host_file.read_text() not in "\n".join(info.value.log_tail)
    assert len(str(info.value)) <= 402 and all(len(line) <= 1002 for line in info.value.log_tail)


def test_multi_line_secret_printed_by_a_step_is_scrubbed_line_by_line(make_builder: Callable[..., BuildahBuilder],
                                                                     tmp_path: Path) -> None:
    first, second = "line-one-" + secrets.token_hex(6), "line-two-" + secrets.token_hex(6)
    dockerfile = """\
FROM scratch
COPY busybox /bin/busybox
RUN --mount=type=secret,id=npmrc ["/bin/busybox", "cat", "/run/secrets/npmrc"]
"""
    built = make_builder().build(context_dir=_context(tmp_path, dockerfile), root=tmp_path / "ctx",
                                 dockerfile="Dockerfile", tag="localhost/t/multi:1", arch="amd64",
                                 secrets={"npmrc": f"{first}\n{second}\n"})
    text = "\n".join(built.log_tail)
    assert first not in text and second not in text and "***" in text


def test_base_image_of_another_arch_is_wrong_architecture(make_builder: Callable[..., BuildahBuilder],
                                                          registry: Registry, tmp_path: Path) -> None:
    """buildah labels the result with the target platform even when its base is of another arch (it only warns):
    the config would say arm64 over amd64 binaries. The warning is read and the build refused, pulled or cached."""
    base = f"{registry.address}/edge/bud_base_amd64only:1"
    builder = make_builder()
    built = builder.build(context_dir=_context(tmp_path, "FROM scratch\nCOPY busybox /bin/busybox\n"),
                          root=tmp_path / "ctx", dockerfile="Dockerfile", tag=base, arch="amd64")
    builder.push(built.tag, base)
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nLABEL purpose=app\n")
    other = make_builder("other")
    for attempt in ("pulled", "in the store"):
        with pytest.raises(WrongArchitecture) as info:
            other.build(context_dir=context, root=context, dockerfile="Dockerfile", tag="localhost/t/app:1",
                        arch="arm64")
        assert (info.value.expected, info.value.actual) == ("arm64", "amd64"), attempt


def test_no_credential_or_secret_on_a_command_line(make_builder: Callable[..., BuildahBuilder], registry: Registry,
                                                   registry_users: dict[str, str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """argv is readable by every user in /proc/PID/cmdline: the password goes in the authfile, secrets in files."""
    seen: list[list[str]] = []
    real = subprocess.Popen

    def recording(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        seen.append(list(argv))
        return real(argv, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr("workers.buildah.subprocess.Popen", recording)
    value = "argv-secret-" + secrets.token_hex(8)
    dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=secret,id=s [\"/bin/busybox\", \"true\"]\n"
    builder = make_builder()
    repository = f"{registry.address}/edge/bud_argv"
    built = builder.build(context_dir=_context(tmp_path, dockerfile), root=tmp_path / "ctx", dockerfile="Dockerfile",
                          tag=f"{repository}:1", arch="amd64", secrets={"s": value}, cache=f"{repository}-cache")
    builder.push(built.tag, f"{repository}:1")
    assert any("--authfile" in argv for argv in seen) and any("--secret" in argv for argv in seen)
    for argv in seen:
        assert not any(registry_users["pusher"] in arg or value in arg for arg in argv), argv
        assert "--creds" not in argv
