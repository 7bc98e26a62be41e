"""What the publish worker's trust checks add to the sign step (issue 12's read-back checks).

Before it signs, the sign job checks the bot's and prepare's seals, rebuilds every deployment from the sealed
definitions and the pushed digests (``workers.trust.check_release``) and reads each pushed image back from the
registry: manifest and config blob, each checked against its sha256, and the config's architecture
(``workers.trust.check_pushed_images``, a new registry client and token per job, as in the job).

Arms, interleaved with the order alternated each round, on a release the pipeline bench just published:

- checks: ``check_release`` + ``check_pushed_images`` (what the sign job now does before signing);
- baseline: RSA-PSS signing of the same deployment strings with the same key (the work the sign step exists for;
  no code shared with the checks).

Reported: min/median/max of each arm, and the checks' median as a ratio of the signing median.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

SECTION = "## Trust checks before signing"


def _summary(values: list[float]) -> dict[str, float]:
    return {"min_ms": round(min(values), 2), "median_ms": round(statistics.median(values), 2),
            "max_ms": round(max(values), 2)}


def run(stack: Any, rounds: int) -> dict[str, Any]:
    from edgebot.config import load_config
    from edgebot.secrets import SecretResolver
    from workers import trust
    from workers.context import WorkerContext
    from workers.signing import PemSigner, sign_deployment

    store = stack.store()
    release = next((r for r in (store.get(i) for i in stack.release_ids())
                    if r is not None and r.state == "succeeded" and not r.dry_run), None)
    if release is None:
        raise RuntimeError("trust cost: no published release to check (run the pipeline bench first)")
    env = stack.env()
    ctx = WorkerContext(load_config(stack.config_path, environ=env), SecretResolver(environ=env))
    sealer = ctx.sealer()
    signer = PemSigner(Path(stack.key_file).read_bytes(), "bench.public.pem")
    deployments = [trust.expected_deployment(release, arch) for arch in release.arches]

    def checks() -> None:
        trust.check_release(sealer, release)
        trust.check_pushed_images(ctx, release)

    def baseline() -> None:
        for deployment in deployments:
            sign_deployment(signer, deployment)

    arms = {"checks": checks, "baseline_sign": baseline}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for arm in arms.values():  # warm both (imports, the TLS context, the key's parameter check)
        arm()
    for i in range(rounds):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        for name in order:
            started = time.perf_counter()
            arms[name]()
            times[name].append((time.perf_counter() - started) * 1000)
    checks_s, base_s = _summary(times["checks"]), _summary(times["baseline_sign"])
    return {"rounds": rounds, "arches": len(release.arches), "checks": checks_s, "baseline_sign": base_s,
            "ratio": round(checks_s["median_ms"] / base_s["median_ms"], 2),
            "added_ms": checks_s["median_ms"]}


def report_section(r: dict[str, Any]) -> str:
    c, b = r["checks"], r["baseline_sign"]
    return f"""{SECTION}

What the sign job checks before it signs ({r['arches']} arch, {r['rounds']} rounds, arms interleaved with the order
alternated): the seals of the request, the source and the pins, every deployment rebuilt from the sealed definitions,
and each pushed image read back from the registry (manifest and config blob verified against their sha256, the
architecture compared; a new registry client and token per job, as in the job). Baseline in the same run: RSA-PSS
signing of the same deployments with the same key, the work the step exists for.

| | min | median | max |
|---|---|---|---|
| trust checks (seals, deployments, registry read-back) | {c['min_ms']} ms | {c['median_ms']} ms | {c['max_ms']} ms |
| baseline: signing the deployments | {b['min_ms']} ms | {b['median_ms']} ms | {b['max_ms']} ms |
| ratio (medians) | {r['ratio']}× | | |

The checks add about {r['added_ms']} ms to each release's sign step; nearly all of it is the registry round trips
(token, manifest, config blob) over TLS.
"""
