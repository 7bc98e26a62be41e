"""The two process types stay lean and their boundary visible: the bot never loads docker (nor the Exchange
client, nor Vault), the workers never load slack_bolt, and neither loads the sandbox stand-ins."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BOT_MODULES = ["bot.app", "bot.wsgi", "bot.grammar", "bot.intake"]
WORKER_MODULES = ["workers.jobs", "workers.pipeline", "workers.worker", "workers.images", "workers.exchange",
                  "workers.signing", "workers.source", "workers.definition"]


def _loaded(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("forbidden", ["docker", "workers", "hvac", "sandbox"])
def test_bot_does_not_import(forbidden: str) -> None:
    loaded = _loaded(BOT_MODULES)
    assert "slack_bolt" in loaded  # the check itself works
    assert not any(m == forbidden or m.startswith(forbidden + ".") for m in loaded)


@pytest.mark.parametrize("forbidden", ["slack_bolt", "bot", "sandbox"])
def test_workers_do_not_import(forbidden: str) -> None:
    loaded = _loaded(WORKER_MODULES)
    assert "docker" in loaded
    assert not any(m == forbidden or m.startswith(forbidden + ".") for m in loaded)


def test_cli_imports_neither_side() -> None:
    """Importing the dispatcher loads no side at all (discovery runs in main(), through find_spec)."""
    loaded = _loaded(["edgebot.cli"])
    assert "edgebot.cli" in loaded  # the check itself works
    assert not any(m.split(".")[0] in {"docker", "slack_bolt", "bot", "workers", "sandbox"} for m in loaded)


CLI_HEAVY = ["docker", "slack_bolt", "slack_sdk", "gunicorn", "rq", "hvac", "httpx", "redis", "bot.app", "bot.wsgi",
             "workers.worker", "workers.config_check", "sandbox.console", "sandbox.stack"]


def test_cli_parser_loads_only_the_side_cli_modules() -> None:
    """Building every side's commands (what `edgebot --help` does) imports each side's small cli module and none of
    what its handlers need."""
    code = ("import contextlib, io, sys\nfrom edgebot.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"bot.cli", "workers.cli", "sandbox.cli"} <= loaded  # the check itself works
    assert not any(m == heavy or m.startswith(heavy + ".") for m in loaded for heavy in CLI_HEAVY)


# -- every import, read statically (function-level and TYPE_CHECKING ones included) ---------------------------------

REPO = Path(__file__).resolve().parent.parent
SIDES = ("edgebot", "bot", "workers", "sandbox")
ALLOWED = {
    "edgebot": {"edgebot", "msgspec", "prometheus_client", "redis", "rq", "slack_sdk"},
    "bot": {"bot", "edgebot", "gunicorn", "redis", "rq", "slack_bolt", "slack_sdk"},
    "workers": {"workers", "edgebot", "certifi", "cryptography", "docker", "httpx", "hvac", "prometheus_client",
                "redis", "requests", "rq", "slack_sdk",
                "yaml"},  # yaml: the namespace of cluster operator YAMLs; certifi: httpx's CA bundle, one TLS context
}
"""What each side may import besides the standard library, click-style: a new dependency is a decision made here.
The sandbox (test equipment) may import anything but is imported by nobody."""


def _modules() -> dict[str, Path]:
    found = {}
    for side in SIDES:
        for path in (REPO / side).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports anywhere in its body; ``from pkg import mod`` counts as importing ``pkg.mod``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_static_reader_sees_function_level_imports() -> None:
    graph = _graph()
    assert "docker" in graph["workers.context"]  # imported inside WorkerContext.docker only
    assert "workers.exchange" in graph["workers.context"]  # under TYPE_CHECKING and inside a method


@pytest.mark.parametrize("side", sorted(ALLOWED))
def test_each_side_imports_only_what_it_is_allowed_to(side: str) -> None:
    offending = {
        f"{name} imports {target}"
        for name, targets in _graph().items() if name.split(".")[0] == side
        for target in targets
        if target.split(".")[0] not in ALLOWED[side] and target.split(".")[0] not in sys.stdlib_module_names
    }
    assert not offending, sorted(offending)


def test_no_import_cycles_between_project_modules() -> None:
    full = _graph()
    graph = {name: {t for t in targets if t in full and t != name} for name, targets in full.items()}
    cycles = [sorted(component) for component in _strongly_connected(graph) if len(component) > 1]
    assert not cycles, cycles


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def test_the_cycle_finder_finds_a_cycle() -> None:
    found = _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(sorted(c) for c in found if len(c) > 1) == [["a", "b", "c"]]


def test_every_step_has_its_job_function_and_every_job_function_is_a_step() -> None:
    import inspect

    import workers.jobs
    from edgebot.jobs import ALLOWED_FUNCTIONS, JOBS_MODULE, Step

    public = {f"{JOBS_MODULE}.{name}" for name, value in vars(workers.jobs).items()
              if inspect.isfunction(value) and value.__module__ == JOBS_MODULE and not name.startswith("_")}
    assert public == ALLOWED_FUNCTIONS == {step.function for step in Step}
