"""``requiredServices``: every dependency checked against the Exchange before anything is built.

The Exchange refuses a service whose dependency it does not hold only when the service is POSTed (exchange-api
``PostPutServiceRequest.getAnyProblem``: ``req.service.not.in.exchange``), i.e. after the build, the push and the
signature; and a dependency published later, or one too old, leaves nodes unable to form agreements. So prepare asks
first: for each arch's definition and each entry (``url``, ``org``, ``arch``, ``versionRange`` — hzn copies a bare
``version`` into it: ``workers.definition._required_services``), ``GET orgs/{org}/services?url=…&arch=…`` lists the
published versions, and one of them must lie inside the range.

Ranges are read as anax ``semanticversion/version.go`` reads them (``Version_Expression_Factory``,
``Is_within_range``): ``[1.0.0,2.0.0)`` with ``[``/``]`` inclusive and ``(``/``)`` exclusive bounds, ``INFINITY`` as an
upper bound, and a bare version ``1.2.0`` meaning ``[1.2.0,INFINITY)`` (at least that version). The reader is the one
``edgebot.constraints`` uses for ``in`` ranges (the same anax file). An entry without ``arch`` depends on the same
arch as the service (the Exchange requires them equal: ``req.service.has.wrong.arch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgebot.constraints import version_in_range, version_range_problem
from edgebot.errors import StepFailed
from workers.definition import ServiceDefinition
from workers.exchange import ExchangeClient, ExchangeForbidden


@dataclass(frozen=True)
class Dependency:
    org: str
    url: str
    arch: str
    version_range: str

    def __str__(self) -> str:
        return f"`{self.org}/{self.url}` ({self.arch}) in `{self.version_range}`"


@dataclass(frozen=True)
class Problem:
    dependency: Dependency
    reason: str


def wanted(definitions: Mapping[str, ServiceDefinition], org: str) -> list[Dependency]:
    """Every (org, url, arch, range) the definitions require, once, in the order they name them."""
    seen: dict[Dependency, None] = {}
    for arch, definition in definitions.items():
        for entry in definition.raw.get("requiredServices") or []:
            if not isinstance(entry, dict):
                continue
            version_range = str(entry.get("versionRange") or entry.get("version") or "")
            seen.setdefault(Dependency(str(entry.get("org") or org), str(entry.get("url") or ""),
                                       str(entry.get("arch") or arch), version_range), None)
    return list(seen)


def check_one(client: ExchangeClient, dep: Dependency) -> Problem | None:
    """None when the Exchange has a version of ``dep`` inside its range; otherwise what is wrong."""
    bad_range = version_range_problem(dep.version_range)
    if bad_range:
        return Problem(dep, f"its versionRange is not one anax reads ({bad_range})")
    try:
        listed = client.list_services(dep.org, url=dep.url, arch=dep.arch)
    except ExchangeForbidden:
        return Problem(dep, f"edgebot's Exchange user may not read it (org `{dep.org}`: a private service of another "
                            "org, or the org does not exist)")
    versions = sorted({str(s.get("version") or "") for s in listed.values()
                       if s.get("url") == dep.url and s.get("arch") == dep.arch},
                      key=_sort_key)
    if any(version_in_range(v, dep.version_range) for v in versions):
        return None
    if not versions:
        return Problem(dep, "no version of it is in the Exchange")
    return Problem(dep, "the Exchange has only " + ", ".join(f"`{v}`" for v in versions[-5:]) + ", none in range")


def _sort_key(version: str) -> tuple[int, ...]:
    parts = version.split(".")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def check(client: ExchangeClient, definitions: Mapping[str, ServiceDefinition], *, org: str, service: str,
          version: str) -> None:
    """Raise StepFailed (nothing built) naming every dependency the Exchange lacks and what to publish first."""
    problems = [p for dep in wanted(definitions, org) if (p := check_one(client, dep)) is not None]
    if not problems:
        return
    lines = [f"{p.dependency}: {p.reason}" for p in problems]
    first = problems[0].dependency
    services = {(p.dependency.org, p.dependency.url) for p in problems}
    raise StepFailed(
        f"{service} {version} requires services the Exchange does not hold: " + "; ".join(lines)
        + f". Nothing was built: publish {'it' if len(services) == 1 else 'them'} first ({first.org}/{first.url} for "
        + ", ".join(sorted({p.dependency.arch for p in problems if p.dependency.url == first.url}))
        + f", a version in `{first.version_range}`"
        + (", and the others above" if len(services) > 1 else "")
        + f"), then publish {service} {version} again.",
        detail=lines)
