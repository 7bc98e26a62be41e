"""Per-arch base images for a Docker Engine that cannot pull (no internet) and cannot run foreign binaries.

The sample service builds `FROM amd64/busybox:1.36` / `FROM arm64v8/busybox:1.36`, as it would against Docker Hub.
Here those images are made locally from Debian's static busybox and loaded with `docker load`, with the image config's
`architecture` set per arch. A Dockerfile without `RUN` steps then builds for any arch on this host (nothing
foreign is ever executed), and each arch has its own base, so one arch's build cache is never reused for another —
the classic builder's cache ignores the platform, which is why edgebot checks the built image's arch before pushing.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from sandbox.processes import busybox_path

HUB_PREFIX = {"amd64": "amd64", "arm64": "arm64v8", "arm": "arm32v7", "ppc64le": "ppc64le", "s390x": "s390x",
              "riscv64": "riscv64"}
TAG = "1.36"


def base_image_name(arch: str) -> str:
    return f"{HUB_PREFIX[arch]}/busybox:{TAG}"


def _add(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tf.addfile(info, io.BytesIO(data))


def image_archive(arch: str, repo_tag: str) -> bytes:
    """A `docker save`-format archive: one layer with /bin/busybox, a config naming ``arch``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        _add(tf, "bin/busybox", Path(busybox_path()).read_bytes(), 0o755)
    layer_bytes = layer.getvalue()
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        "history": [{"created_by": "edgebot sandbox: static busybox from Debian's busybox-static"}],
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
