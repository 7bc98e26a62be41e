"""Cross-arch builds: two arches built in parallel on two build workers, and a rebuild through the registry cache.

    python -m bench.cross_arch            3 rounds each; replaces its section of docs/BENCHMARKS.md
    python -m bench.cross_arch --smoke    1 small round each; prints only (bench.run --smoke runs it too)

1. **Parallelism.** A two-arch release of the sample service (amd64 built natively, arm64 built under QEMU by a
   second build worker on the same amd64 host), each Dockerfile with a CPU-bound ``RUN`` step, through the whole
   pipeline (real workers, Engine, registry, Exchange stand-in). Per release: each arch's build job time (RQ's own
   ``started_at``/``ended_at``), and the wall time from the first build's start to the last one's end. Ratio =
   wall ÷ the sum of the two builds: 1.0 is sequential, ``max ÷ sum`` (reported beside it) is perfectly parallel.
2. **Registry cache.** The buildah builder (``workers.buildah``) on two build-worker stores: a cold build (empty store,
   empty cache repository) of a Dockerfile with a costly ``RUN`` step, then, on the *other* store (another worker),
   a build of the next commit where one source file copied after that step changed, with the same registry cache.
   Ratio = rebuild ÷ cold. Each round has fresh stores and a fresh cache repository, and the ``RUN`` step differs per
   round, so nothing is shared between rounds. The rebuild necessarily follows its cold build (it reads its cache);
   which store is cold alternates.

min / median / max over the rounds are kept for every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import write_measured

SECTION = "## Cross-arch builds"

_DOCKERFILE = """\
FROM {base}
COPY index.html /www/index.html
RUN ["/bin/busybox", "sh", "-c", "i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; echo $i > /www/loops"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]
"""
_CACHE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; echo {nonce} $i > /loops"]
COPY app.txt /app.txt
"""


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def parallelism(rounds: int, loops: int) -> dict[str, Any]:
    from rq.job import Job

    from edgebot.jobs import Step
    from sandbox.processes import add_commit
    from sandbox.stack import Stack

    versions = tuple(f"9.{i}.0" for i in range(rounds))
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="edgebot-crossarch-") as tmp:
        stack = Stack(Path(tmp), arches=("amd64", "arm64"), versions=versions, settings={"duplicate_window": 1})
        try:
            stack.start()  # a publish worker, a native amd64 build worker, an arm64 one building under QEMU
            stack.wait_workers(3)
            for i, version in enumerate(versions):
                add_commit(stack.source_path, {
                    "Dockerfile.amd64": _DOCKERFILE.format(base="amd64/busybox:1.36", loops=loops),
                    "Dockerfile.arm64": _DOCKERFILE.format(base="arm64v8/busybox:1.36", loops=loops),
                    "index.html": f"cross-arch round {i}\n"}, tag=f"v{version}")
                release = stack.finished(stack.start_release(f"publish hello {version} --registry local"),
                                         timeout=1800)
                if release.state != "succeeded":
                    raise RuntimeError(f"release {version} ended {release.state}: {release.error}")
                spans = {}
                for arch in ("amd64", "arm64"):
                    job = Job.fetch(Step.BUILD.job_id(release.release_id, arch), connection=stack.redis())
                    assert job.started_at is not None and job.ended_at is not None
                    spans[arch] = (job.started_at.timestamp(), job.ended_at.timestamp())
                builds = {arch: end - start for arch, (start, end) in spans.items()}
                wall = max(end for _, end in spans.values()) - min(start for start, _ in spans.values())
                samples.append({"amd64_s": builds["amd64"], "arm64_s": builds["arm64"], "wall_s": wall,
                                "ratio": wall / sum(builds.values()),
                                "ideal": max(builds.values()) / sum(builds.values())})
        finally:
            stack.stop()
    return {"rounds": rounds, "loops": loops,
            **{key: _spread([s[key] for s in samples]) for key in ("amd64_s", "arm64_s", "wall_s", "ratio", "ideal")}}


def registry_cache(rounds: int, loops: int) -> dict[str, Any]:
    from sandbox.pki import TestCA
    from sandbox.proc_net import Registry
    from sandbox.processes import busybox_path
    from workers.buildah import BuildahBuilder, BuildahOptions, RegistryAccess, cert_dir

    users = {"pusher": "bench-push-pw"}
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgebot-buildcache-") as tmp:
        root = Path(tmp)
        with Registry(root / "registry", TestCA.create("edgebot bench CA"), users=users) as registry:
            certs = cert_dir(root / "certs", ca_pem=registry.ca_path.read_text(), certs_d=None)
            access = RegistryAccess(host=registry.address, credentials=lambda: ("pusher", users["pusher"]),
                                    cert_dir=certs)
            for i in range(rounds):
                nonce = f"{time.time_ns()}-{i}"
                context = root / f"ctx-{i}"
                context.mkdir()
                shutil.copy(busybox_path(), context / "busybox")
                (context / "Dockerfile").write_text(_CACHE_DOCKERFILE.format(loops=loops, nonce=nonce))
                cache = f"{registry.address}/bench/cache-{i}"
                stores = [root / f"store-{i}-a", root / f"store-{i}-b"]
                if i % 2:
                    stores.reverse()
                for n, store in enumerate(stores):
                    (context / "app.txt").write_text(f"commit {n} of round {i}\n")  # one file changed
                    builder = BuildahBuilder(BuildahOptions(storage=store, timeout=1800), access)
                    started = time.perf_counter()
                    builder.build(context_dir=context, root=context, dockerfile="Dockerfile",
                                  tag=f"localhost/bench/cache:{i}-{n}", arch="amd64", cache=cache)
                    (cold if n == 0 else warm).append(time.perf_counter() - started)
                    shutil.rmtree(store, ignore_errors=True)
    return {"rounds": rounds, "loops": loops, "cold_s": _spread(cold), "rebuild_s": _spread(warm),
            "ratio": round(statistics.median(warm) / statistics.median(cold), 2)}


def run(*, smoke: bool) -> dict[str, Any]:
    rounds, loops = (1, 2_000) if smoke else (3, 400_000)
    return {"parallelism": parallelism(rounds, loops), "registry_cache": registry_cache(rounds, loops),
            "machine": f"{platform.machine()} {platform.system()}, {_cpus()} CPUs",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def report_section(r: dict[str, Any]) -> str:
    p, c = r["parallelism"], r["registry_cache"]

    def spread(s: dict[str, float], unit: str = " s") -> str:
        return f"{s['min']} / {s['median']} / {s['max']}{unit}"

    return f"""{SECTION}

`python -m bench.cross_arch` ({r['machine']}). **Parallelism:** a two-arch release of the sample service through
the whole pipeline, amd64 built natively and arm64 under QEMU by a second build worker on the same host, each
Dockerfile with a CPU-bound `RUN` step ({p['loops']:,} shell loop iterations); {p['rounds']} releases. **Registry
cache:** the buildah builder, a cold build (empty store, empty cache repository) then a rebuild with one source file
changed after the costly step on another worker's empty store, through the same registry cache; {c['rounds']} rounds,
fresh stores and cache repository each, the cold store alternating. min / median / max.

| | min / median / max |
|---|---|
| amd64 build job (native) | {spread(p['amd64_s'])} |
| arm64 build job (QEMU) | {spread(p['arm64_s'])} |
| wall time, first build start to last build end | {spread(p['wall_s'])} |
| wall ÷ sum of the two builds (1.0 = one after the other) | {spread(p['ratio'], '')} |
| perfectly parallel would be max ÷ sum | {spread(p['ideal'], '')} |
| cold buildah build | {spread(c['cold_s'])} |
| rebuild, one file changed, registry cache, another worker | {spread(c['rebuild_s'])} |
| rebuild ÷ cold (medians) | {c['ratio']}× |

Both arches build at once on different workers (the two-core machine is shared by both builds, QEMU's emulation
and the rest of the stack, so the wall time is above the ideal). The rebuild reuses the costly layer from the registry
and runs only the steps after the changed file.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cross_arch")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke)
    print(json.dumps(results, indent=2))
    if not args.smoke:
        write_measured(report_section(results), "python -m bench.cross_arch", results["machine"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
