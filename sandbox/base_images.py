"""Per-arch base images for a Docker Engine that cannot pull (no internet).

The sample service builds `FROM amd64/busybox:1.36` / `FROM arm64v8/busybox:1.36`, as it would against Docker Hub.
Here those images are made locally from Debian's static busybox *of that arch* and loaded with `docker load`, with
the image config's `architecture` set per arch: amd64 from the host's busybox-static, arm64 and arm from Debian's
``busybox-static:arm64`` / ``busybox-static:armhf``, which ``scripts/install-system-deps.sh`` extracts into
:data:`BUSYBOX_CACHE` (``/var/cache/edgebot/busybox/<arch>/busybox``, or ``$EDGEBOT_BUSYBOX_CACHE``). A ``RUN`` step
of an arm64 build then really runs aarch64 code, under QEMU through binfmt_misc on an amd64 host. Each arch has its own
base, so one arch's build cache is never reused for another — the classic builder's cache ignores the platform, which
is why edgebot checks the built image's arch before pushing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from sandbox.processes import StartFailed, busybox_path

HUB_PREFIX = {"amd64": "amd64", "arm64": "arm64v8", "arm": "arm32v7", "ppc64le": "ppc64le", "s390x": "s390x",
              "riscv64": "riscv64"}
TAG = "1.36"
BUSYBOX_CACHE = "/var/cache/edgebot/busybox"
"""Where the install script puts each foreign arch's static busybox (``<arch>/busybox``)."""
DEBIAN_ARCH = {"arm64": "arm64", "arm": "armhf", "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}
REAL_ARCHES = ("arm64", "arm")
"""The foreign arches whose base must hold a binary of that arch (the install script fetches them)."""
ELF_MACHINE = {"amd64": 62, "arm64": 183, "arm": 40, "ppc64le": 21, "s390x": 22, "riscv64": 243}


def arch_busybox(arch: str) -> Path:
    """The static busybox binary of ``arch``; a clear error naming the fix when it is missing or of another arch.
    Arches outside :data:`REAL_ARCHES` (ppc64le, s390x, riscv64: no QEMU handler is enabled for them here) use a
    cached binary of theirs when there is one, else the host's, as labels only (nothing in them can run)."""
    path = Path(os.environ.get("EDGEBOT_BUSYBOX_CACHE", BUSYBOX_CACHE)) / arch / "busybox"
    if arch == "amd64" or (arch not in REAL_ARCHES and not path.is_file()):
        return Path(busybox_path())
    deb = DEBIAN_ARCH.get(arch, arch)
    fix = (f"run scripts/install-system-deps.sh (it extracts Debian's busybox-static:{deb} there), or by hand: "
           f"dpkg --add-architecture {deb}; apt-get update; apt-get download busybox-static:{deb}; "
           f"dpkg-deb -x busybox-static_*.deb x; install -D x/bin/busybox {path}")
    if not path.is_file():
        raise StartFailed(f"no {arch} busybox at {path} for the sandbox's {base_image_name(arch)} base: {fix}")
    head = path.read_bytes()[:20]
    machine = int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else -1
    if machine != ELF_MACHINE.get(arch):
        raise StartFailed(f"{path} is not an {arch} ELF binary (machine {machine}): {fix}")
    return path


def base_image_name(arch: str) -> str:
    return f"{HUB_PREFIX[arch]}/busybox:{TAG}"


def _add(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tf.addfile(info, io.BytesIO(data))


def image_archive(arch: str, repo_tag: str) -> bytes:
    """A `docker save`-format archive: one layer with ``arch``'s /bin/busybox, a config naming ``arch``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        _add(tf, "bin/busybox", arch_busybox(arch).read_bytes(), 0o755)
    layer_bytes = layer.getvalue()
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        "history": [{"created_by": "edgebot sandbox: static busybox from Debian's busybox-static:"
                                    + DEBIAN_ARCH.get(arch, arch)}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": ["layer/layer.tar"]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        _add(tf, config_name, config_bytes)
        _add(tf, "layer/layer.tar", layer_bytes)
        _add(tf, "manifest.json", json.dumps(manifest).encode())
    return out.getvalue()


def seed_base_images(client: Any, arches: tuple[str, ...] = ("amd64", "arm64")) -> list[str]:
    """Load the busybox base image of each arch into the daemon behind ``client``; return their names."""
    names = []
    for arch in arches:
        name = base_image_name(arch)
        client.images.load(image_archive(arch, name))
        names.append(name)
    return names
