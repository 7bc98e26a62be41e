"""A real Prometheus (Debian's ``prometheus`` package) scraping sandbox processes, with edgebot's rule files loaded.

Started like the other real parts (``sandbox/proc_base.py``): its own directory for the config, the TSDB and the log,
a free port on 127.0.0.1, ready when ``/-/ready`` answers 200. The scrape and rule-evaluation intervals are short
(1 s by default) so a test sees samples and rule evaluations within seconds; the rules themselves are loaded as
shipped. :meth:`PrometheusServer.api` reads Prometheus's HTTP API (``/api/v1/targets``, ``/query``, ``/rules``…) and
returns its ``data``, raising on an ``error`` answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sandbox.proc_base import Managed, free_port, spawn, stop_process, wait_ready


class PrometheusError(RuntimeError):
    """Prometheus answered a query with ``"status": "error"`` (its ``errorType`` and ``error`` in the message)."""


class PrometheusServer(Managed):
    """``prometheus`` scraping ``targets`` (job name → ``host:port`` addresses, path ``/metrics``) every
    ``interval`` seconds and evaluating ``rule_files`` as often."""

    def __init__(self, workdir: Path, targets: Mapping[str, Sequence[str]], *, rule_files: Sequence[Path] = (),
                 interval: float = 1.0, port: int | None = None, binary: str = "prometheus") -> None:
        self.workdir = Path(workdir)
        self.targets = {job: list(addresses) for job, addresses in targets.items()}
        self.rule_files = [Path(f).resolve() for f in rule_files]
        self.interval = interval
        self.port = port or free_port()
        self.binary = binary
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        """The configuration file's content (JSON is YAML, so it is written as JSON)."""
        every = f"{int(self.interval * 1000)}ms"
        return {
            "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every},
            "rule_files": [str(f) for f in self.rule_files],
            "scrape_configs": [{"job_name": job, "metrics_path": "/metrics",
                                "static_configs": [{"targets": addresses}]}
                               for job, addresses in self.targets.items()],
        }

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2) + "\n")
        self.proc = spawn([self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                           f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                          self.log_path)

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return bool(response.status == 200)

        wait_ready(ready, timeout=60, what=f"prometheus on port {self.port}", log=self.log_path, proc=self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def api(self, endpoint: str, **params: str) -> Any:
        """``GET /api/v1/<endpoint>?<params>`` → the answer's ``data``."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{endpoint}{query}", timeout=20) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422/503 carry the error document too
            answer = json.loads(exc.read())
        if answer.get("status") != "success":
            raise PrometheusError(f"{endpoint}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {labels}, "value": [time, "value"]}, …]``."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"query {expr!r} gave a {data['resultType']}, not a vector")
        return list(data["result"])

    def targets_by_job(self) -> dict[str, list[dict[str, Any]]]:
        """The active scrape targets of each job (``health``: up, down or unknown; ``lastError``)."""
        targets: dict[str, list[dict[str, Any]]] = {}
        for target in self.api("targets", state="active")["activeTargets"]:
            targets.setdefault(target["labels"]["job"], []).append(target)
        return targets

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its group's file: ``name``, ``type``, ``health`` (ok, err, unknown),
        ``lastError``, ``lastEvaluation``."""
        return [{**rule, "file": group["file"]} for group in self.api("rules")["groups"] for rule in group["rules"]]
