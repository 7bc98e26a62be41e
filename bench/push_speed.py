"""Push of a fresh layer: edgebot's push (workers.images.push_image, ``settings.push_tool``) vs. ``docker push``
(the Engine's push API through docker-py), with the streamed parallel-gzip upload limit beside them.

    python -m bench.push_speed            20 MiB and 200 MiB layers, 4 rounds; writes its docs/BENCHMARKS.md section
    python -m bench.push_speed --smoke    a 1 MiB layer, 1 round (bench.run --smoke runs it on the stack's parts)

Every arm pushes an image of its own with a layer of fresh random bytes (random: gzip cannot shrink it, so the
figures are the compression and transfer work a real binary layer costs), built before the clock starts, to a
repository of its own on the same TLS registry with htpasswd auth, so no arm finds a blob another one uploaded. The
limit arm is no image push: ``pigz -1`` of the layer's tar, streamed into a Registry API blob upload (POST, one
chunked PATCH while pigz writes, PUT with the digest) with httpx — the compress-while-uploading floor for that layer.
Arms run in an order rotated every round; min, median and max are kept.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.report import save_results, write_measured

ARMS = ("edgebot", "docker push", "pigz -1 stream")
CHUNK = 1024 * 1024


def _payload_tar(path: Path, size: int, dockerfile: bool) -> Path:
    """A tar holding ``payload`` (``size`` random bytes), plus a Dockerfile that copies it when ``dockerfile``."""
    with tarfile.open(path, "w") as tar:
        if dockerfile:
            text = b"FROM scratch\nCOPY payload /payload\n"
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
        info = tarfile.TarInfo("payload")
        info.size, info.mode = size, 0o644
        with tempfile.TemporaryFile() as data:
            left = size
            while left:
                data.write(os.urandom(min(CHUNK, left)))
                left -= min(CHUNK, left)
            data.seek(0)
            tar.addfile(info, data)
    return path


def _build(client: Any, workdir: Path, tag: str, size: int) -> None:
    context = _payload_tar(workdir / "context.tar", size, dockerfile=True)
    with context.open("rb") as handle:
        for _ in client.api.build(fileobj=handle, custom_context=True, tag=tag, rm=True, decode=True,
                                  platform="linux/amd64"):
            pass
    context.unlink()


def _stream_upload(registry: Any, repo: str, layer: Path) -> str:
    """``pigz -1 < layer`` streamed into a blob upload; returns the blob digest."""
    digest = hashlib.sha256()
    with registry._http() as http:
        started = http.post(f"/v2/{repo}/blobs/uploads/")
        started.raise_for_status()
        location = started.headers["Location"]
        with layer.open("rb") as source:
            pigz = subprocess.Popen(["pigz", "-1", "-c"], stdin=source, stdout=subprocess.PIPE)
            assert pigz.stdout is not None

            def chunks() -> Iterator[bytes]:
                assert pigz.stdout is not None
                while block := pigz.stdout.read(CHUNK):
                    digest.update(block)
                    yield block

            patched = http.patch(location, content=chunks(), headers={"Content-Type": "application/octet-stream"})
            pigz.wait()
        patched.raise_for_status()
        blob = "sha256:" + digest.hexdigest()
        location = patched.headers["Location"]  # keeps its _state query: add the digest to it, not replace it
        done = http.put(location + ("&" if "?" in location else "?") + f"digest={blob}")
        done.raise_for_status()
    return blob


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _arms(client: Any, registry: Any, repos: dict[str, str], layer: Path, *, user: str, password: str,
          settings: Any) -> dict[str, Callable[[], object]]:
    from workers.images import engine_push, push_image

    return {
        "edgebot": lambda: push_image(client, repository=repos["edgebot"], tag="1", username=user,
                                      password=password, settings=settings),
        "docker push": lambda: engine_push(client, repository=repos["docker push"], tag="1", username=user,
                                           password=password),
        "pigz -1 stream": lambda: _stream_upload(registry, repos["pigz -1 stream"].split("/", 1)[1], layer),
    }


def run(client: Any, registry: Any, *, user: str, password: str, sizes_mib: tuple[int, ...], rounds: int,
        workdir: Path) -> dict[str, Any]:
    from edgebot.settings import Settings

    settings = Settings()
    results: dict[str, Any] = {"push_tool": settings.push_tool, "rounds": rounds, "sizes": {}}
    for size_mib in sizes_mib:
        size = size_mib * 1024 * 1024
        times: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for n in range(rounds):
            name = f"bench/push{size_mib}-{n}-{os.getpid()}"
            repos = {arm: f"{registry.address}/{name}-{i}" for i, arm in enumerate(ARMS)}
            for arm in ARMS[:2]:  # fresh random layers, built before the clock starts
                _build(client, workdir, f"{repos[arm]}:1", size)
            layer = _payload_tar(workdir / "layer.tar", size, dockerfile=False)
            pushes = _arms(client, registry, repos, layer, user=user, password=password, settings=settings)
            order = ARMS[n % len(ARMS):] + ARMS[:n % len(ARMS)]  # rotated: no arm always first
            for arm in order:
                times[arm].append(_timed(pushes[arm]))
            layer.unlink()
            for arm in ARMS[:2]:
                client.api.remove_image(f"{repos[arm]}:1", force=True)
        summary = {arm: {"min_s": round(min(t), 2), "median_s": round(statistics.median(t), 2),
                         "max_s": round(max(t), 2)} for arm, t in times.items()}
        median = {arm: statistics.median(t) for arm, t in times.items()}
        summary["ratio_vs_docker_push"] = round(median["edgebot"] / median["docker push"], 2)
        summary["ratio_vs_stream_limit"] = round(median["edgebot"] / median["pigz -1 stream"], 2)
        results["sizes"][f"{size_mib} MiB"] = summary
    return results


def run_on_stack(stack: Any, *, smoke: bool) -> dict[str, Any]:
    """:func:`run` on a sandbox stack's dockerd and registry (bench.run)."""
    from sandbox.stack import PUSH_PASSWORD, PUSH_USER

    client = stack.docker.client(timeout=900)
    try:
        with tempfile.TemporaryDirectory(prefix="push-bench-", dir=stack.workdir) as work:
            results = run(client, stack.registry, user=PUSH_USER, password=PUSH_PASSWORD,
                          sizes_mib=(1,) if smoke else (20, 200), rounds=1 if smoke else 4, workdir=Path(work))
    finally:
        client.close()
    return results


def report_section(results: dict[str, Any]) -> str:
    rows = []
    for size, s in results["sizes"].items():
        def cell(arm: str, s: dict[str, Any] = s) -> str:
            return f"{s[arm]['median_s']} s ({s[arm]['min_s']}–{s[arm]['max_s']})"

        rows.append(f"| {size} | {cell('edgebot')} | {cell('docker push')} | {cell('pigz -1 stream')} "
                    f"| {s['ratio_vs_docker_push']}× | {s['ratio_vs_stream_limit']}× |")
    return f"""## Push of a fresh layer

One image with one layer of fresh random bytes per arm and round, pushed to its own repository of the sandbox's TLS
registry (htpasswd auth) from a private dockerd on the same machine. edgebot: `workers.images.push_image` with the
default settings (`push_tool = "{results['push_tool']}"`: `skopeo copy docker-daemon:… docker://…`, parallel gzip
while uploading, Docker schema 2). docker push: the Engine's push API (single-threaded gzip). Limit: `pigz -1` of the
layer's tar streamed into a Registry API blob upload with httpx (layer only, no config or manifest). Arms in an
order rotated every round, {results['rounds']} rounds; median (min–max).

| layer | edgebot | docker push | pigz -1 stream (limit) | edgebot ÷ docker push | edgebot ÷ limit |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Goal (issue 16): edgebot ÷ docker push ≤ 0.6×.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    from sandbox.pki import TestCA
    from sandbox.processes import DockerDaemon, Registry

    user, password = "pusher", "bench-push-" + os.urandom(6).hex()
    with tempfile.TemporaryDirectory(prefix="edgebot-push-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        with DockerDaemon(work / "dk") as daemon, Registry(work / "reg", TestCA.create("push bench CA"),
                                                            users={user: password}) as registry:
            client = daemon.client(timeout=900)
            try:
                results = run(client, registry, user=user, password=password,
                              sizes_mib=(1,) if args.smoke else (20, 200), rounds=1 if args.smoke else 4,
                              workdir=work)
            finally:
                client.close()
    results["machine"] = f"{platform.machine()} {platform.system()}"
    save_results("push_speed", results)
    if not args.smoke:
        write_measured(report_section(results), "python -m bench.push_speed", results["machine"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
