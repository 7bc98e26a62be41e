"""Which arches a build worker can build: its Engine's own (native) and those QEMU runs through binfmt_misc (emulated).

A ``RUN`` step of a ``linux/arm64`` build on an amd64 host executes aarch64 code; the kernel runs it only when a
binfmt_misc handler for aarch64 ELF binaries is registered and enabled (Debian's ``qemu-user-static`` +
``binfmt-support``; ``scripts/install-system-deps.sh`` mounts binfmt_misc and enables them). A handler is read from
``/proc/sys/fs/binfmt_misc/<name>``: its first line ``enabled``, its ``magic`` the ELF header of that arch (the
``e_machine`` field checked, so a handler named ``qemu-aarch64`` that matches something else does not count), and
``/proc/sys/fs/binfmt_misc/status`` ``enabled``. The Engine must share this kernel (a local dockerd, or one on the same
host): for a remote Engine, name the arches with ``--arch``.

Routing: a worker registers on the build queue of each arch it serves; a native one also on that arch's
``…-native`` marker queue, which is how :func:`live_native_workers` finds it (RQ's own worker registry and heartbeat:
nothing to clean up after a crash). An emulated worker leaves an arch's queue alone while a native worker of that arch
is live (:func:`deferred`), so native workers take the builds when there are any, and emulated ones when there are
none (``workers.worker.EdgebotWorker``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebot.jobs import SERIALIZER, build_queue

BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
PARKED_QUEUE = build_queue("parked")
"""Where an emulated-only worker waits while native workers serve all its arches: no job is ever put there."""

MACHINE_TO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
                   "armhf": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
"""``uname -m`` (and the Engine's ``Architecture``) → Go arch, as Open Horizon names arches."""

HANDLERS = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64", "arm": "qemu-arm", "ppc64le": "qemu-ppc64le",
            "s390x": "qemu-s390x", "riscv64": "qemu-riscv64"}
"""The binfmt_misc handler Debian's qemu-user-static registers for each arch."""

ELF_MACHINE = {"amd64": 62, "arm64": 183, "arm": 40, "ppc64le": 21, "s390x": 22, "riscv64": 243}
"""The ELF ``e_machine`` of each arch (bytes 18–19 of the header, the handler's magic must match them)."""


def native_marker_queue(arch: str) -> str:
    """The queue a native worker of ``arch`` also registers on: never given jobs, it marks the worker native."""
    return build_queue(arch) + "-native"


@dataclass(frozen=True)
class ArchSupport:
    arch: str
    native: bool
    how: str
    """"native (x86_64)" or "QEMU via binfmt handler qemu-aarch64 (/usr/libexec/…)"."""

    def line(self) -> str:
        return f"{self.arch}: {self.how}"


def handler_problem(binfmt_dir: Path, arch: str) -> str:
    """Why ``arch``'s binaries do not run through binfmt_misc here ("" when they do)."""
    name = HANDLERS.get(arch)
    if name is None:
        return f"no QEMU handler is known for {arch}"
    status = binfmt_dir / "status"
    if not status.is_file():
        return f"binfmt_misc is not mounted at {binfmt_dir} (scripts/install-system-deps.sh mounts it)"
    if status.read_text(errors="replace").strip() != "enabled":
        return "binfmt_misc is disabled (echo 1 > status)"
    path = binfmt_dir / name
    if not path.is_file():
        return f"no {name} handler registered (install qemu-user-static and binfmt-support; update-binfmts --enable)"
    fields = _fields(path.read_text(errors="replace"))
    if fields.get("state") != "enabled":
        return f"the {name} handler is disabled (update-binfmts --enable {name})"
    magic = _hex(fields.get("magic", ""))
    offset = fields.get("offset", "0")
    if offset != "0" or len(magic) < 20 or magic[:4] != b"\x7fELF":
        return f"the {name} handler does not match ELF binaries"
    if int.from_bytes(magic[18:20], "big" if magic[5] == 2 else "little") != ELF_MACHINE[arch]:
        return f"the {name} handler matches another machine's ELF binaries, not {arch}'s"
    interpreter = fields.get("interpreter", "")
    if "F" not in fields.get("flags", "") and not Path(interpreter).is_file():
        return f"the {name} handler's interpreter {interpreter or '?'} is missing"
    return ""


def _fields(text: str) -> dict[str, str]:
    lines = text.splitlines()
    fields = {"state": lines[0].strip() if lines else ""}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return fields


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def supported(native_machine: str, binfmt_dir: Path | str = BINFMT_DIR) -> list[ArchSupport]:
    """Every arch buildable on this kernel: the native one, then each one an enabled QEMU handler runs."""
    native = MACHINE_TO_ARCH.get(native_machine, native_machine)
    found = [ArchSupport(native, True, f"native ({native_machine})")]
    for arch, name in HANDLERS.items():
        if arch != native and not handler_problem(Path(binfmt_dir), arch):
            interpreter = _fields((Path(binfmt_dir) / name).read_text(errors="replace")).get("interpreter", "")
            found.append(ArchSupport(arch, False, f"QEMU via binfmt handler {name} ({interpreter})"))
    return found


def engine_machine(client: Any) -> str:
    """The Engine's own ``uname -m`` (``docker info``'s Architecture), or this host's when it does not say."""
    try:
        return str(client.info().get("Architecture") or platform.machine())
    except Exception:
        return platform.machine()


def detect(docker_url: str | None, binfmt_dir: Path | str = BINFMT_DIR) -> list[ArchSupport]:
    """What a build worker whose Engine is at ``docker_url`` (None: DOCKER_HOST / the default socket) can build."""
    import docker

    client = docker.DockerClient(base_url=docker_url) if docker_url else docker.from_env()
    try:
        return supported(engine_machine(client), binfmt_dir)
    finally:
        client.close()


def plan(requested: list[str], found: list[ArchSupport]) -> list[ArchSupport]:
    """The arches a worker serves: ``auto`` expands to every arch found; an arch named explicitly is served as
    configured (native when the Engine is of that arch, emulated otherwise, whether or not a handler was found)."""
    by_arch = {s.arch: s for s in found}
    served: dict[str, ArchSupport] = {}
    for arch in requested:
        if arch == "auto":
            served.update({s.arch: s for s in found if s.arch not in served})
        elif arch not in served:
            served[arch] = by_arch.get(arch) or ArchSupport(arch, False, "as configured (no QEMU handler found)")
    return list(served.values())


def live_native_workers(connection: Any, arch: str, worker_ttl: float) -> int:
    """How many workers registered as native for ``arch`` heart-beat (the same horizon as ``live_build_workers``)."""
    from rq import Queue, Worker

    queue = Queue(native_marker_queue(arch), connection=connection, serializer=SERIALIZER)
    horizon = time.time() - 2 * worker_ttl - 10
    return sum(1 for w in Worker.all(connection=connection, queue=queue)
               if w.last_heartbeat is not None and w.last_heartbeat.timestamp() >= horizon)


def deferred(connection: Any, emulated: list[str], worker_ttl: float) -> set[str]:
    """The emulated arches whose builds this worker leaves to a live native worker now."""
    return {arch for arch in emulated if live_native_workers(connection, arch, worker_ttl) > 0}
