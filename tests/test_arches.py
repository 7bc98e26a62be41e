"""Which arches a build worker serves (workers.arches): the binfmt_misc probe against fake handler dirs written as the
kernel shows them (fs/binfmt_misc.c ``bm_entry_read``: state line, ``interpreter``, ``flags:``, ``offset``, ``magic``,
``mask``), the real /proc one on this machine, and native-first routing between real worker registrations."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue

from edgebot.jobs import SERIALIZER, build_queue
from edgebot.settings import Settings
from workers import arches
from workers.worker import EdgebotWorker, queue_names

AARCH64_MAGIC = "7f454c460201010000000000000000000200b700"
AARCH64_MASK = "ffffffffffffff00fffffffffffffffffeffffff"
ARM_MAGIC = "7f454c4601010100000000000000000002002800"


def _handler(binfmt: Path, name: str, magic: str, *, state: str = "enabled", flags: str = "PF",
             interpreter: str = "/usr/libexec/qemu-binfmt/x-binfmt-P") -> None:
    (binfmt / name).write_text(f"{state}\ninterpreter {interpreter}\nflags: {flags}\noffset 0\nmagic {magic}\n"
                               f"mask {AARCH64_MASK}\n")


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "register").write_text("")
    return tmp_path


def test_an_enabled_aarch64_handler_makes_arm64_served_emulated(binfmt: Path) -> None:
    _handler(binfmt, "qemu-aarch64", AARCH64_MAGIC)
    found = arches.supported("x86_64", binfmt)
    assert [(s.arch, s.native) for s in found] == [("amd64", True), ("arm64", False)]
    assert "qemu-aarch64" in found[1].how


def test_a_disabled_unmatched_or_missing_handler_serves_nothing_and_says_why(binfmt: Path) -> None:
    assert "no qemu-aarch64 handler registered" in arches.handler_problem(binfmt, "arm64")
    _handler(binfmt, "qemu-aarch64", AARCH64_MAGIC, state="disabled")
    assert "update-binfmts --enable qemu-aarch64" in arches.handler_problem(binfmt, "arm64")
    _handler(binfmt, "qemu-aarch64", ARM_MAGIC)  # named aarch64, matching 32-bit arm binaries
    assert "another machine's" in arches.handler_problem(binfmt, "arm64")
    _handler(binfmt, "qemu-aarch64", AARCH64_MAGIC, flags="P", interpreter="/nonexistent/qemu")
    assert "interpreter /nonexistent/qemu is missing" in arches.handler_problem(binfmt, "arm64")
    assert [s.arch for s in arches.supported("x86_64", binfmt)] == ["amd64"]
    (binfmt / "status").write_text("disabled\n")
    _handler(binfmt, "qemu-aarch64", AARCH64_MAGIC)
    assert "binfmt_misc is disabled" in arches.handler_problem(binfmt, "arm64")
    assert "not mounted" in arches.handler_problem(binfmt / "nowhere", "arm64")


def test_an_arm_handler_and_an_arm64_host(binfmt: Path) -> None:
    _handler(binfmt, "qemu-arm", ARM_MAGIC)
    assert [(s.arch, s.native) for s in arches.supported("aarch64", binfmt)] == [("arm64", True), ("arm", False)]


def test_plan_auto_and_explicit_arches(binfmt: Path) -> None:
    _handler(binfmt, "qemu-aarch64", AARCH64_MAGIC)
    found = arches.supported("x86_64", binfmt)
    assert [s.arch for s in arches.plan(["auto"], found)] == ["amd64", "arm64"]
    explicit = arches.plan(["arm", "amd64"], found)  # explicit configuration keeps working, as configured
    assert [(s.arch, s.native) for s in explicit] == [("arm", False), ("amd64", True)]
    assert queue_names(["amd64", "arm64"], False, native=("amd64",)) == [
        build_queue("amd64"), build_queue("arm64"), arches.native_marker_queue("amd64")]


def test_this_machine_serves_arm64_through_its_enabled_qemu_handler() -> None:
    # the install script registers qemu-aarch64 (scripts/install-system-deps.sh); the real /proc entry
    assert arches.handler_problem(Path(arches.BINFMT_DIR), "arm64") == ""
    assert ("arm64", False) in [(s.arch, s.native) for s in arches.supported("x86_64")]


def _worker(conn: redis.Redis, names: list[str], emulated: list[str]) -> EdgebotWorker:
    queues = [Queue(n, connection=conn, serializer=SERIALIZER) for n in names]
    return EdgebotWorker(queues, settings=Settings(), publish=False, connection=conn, serializer=SERIALIZER,
                         emulated=emulated)


def test_an_emulated_worker_leaves_the_queue_to_a_live_native_worker(redis_conn: redis.Redis) -> None:
    emulated = _worker(redis_conn, queue_names(["amd64", "arm64"], False, native=("amd64",)), ["arm64"])
    emulated.register_birth()
    emulated.set_state("idle")
    emulated.heartbeat()
    assert build_queue("arm64") in [q.name for q in emulated._ordered_queues]  # no native arm64 worker: serves it
    native = _worker(redis_conn, queue_names(["arm64"], False, native=("arm64",)), [])
    native.register_birth()
    native.heartbeat()
    assert arches.live_native_workers(redis_conn, "arm64", Settings().worker_ttl) == 1
    emulated.heartbeat()
    assert [q.name for q in emulated._ordered_queues] == [build_queue("amd64"), arches.native_marker_queue("amd64")]
    native.register_death()  # the native worker gone (a crash: its heartbeat stops, the same once it is stale)
    emulated.heartbeat()
    assert build_queue("arm64") in [q.name for q in emulated._ordered_queues]
    only = _worker(redis_conn, queue_names(["arm64"], False), ["arm64"])
    native.register_birth()
    native.heartbeat()
    only.register_birth()
    only.set_state("idle")
    only.heartbeat()
    assert [q.name for q in only._ordered_queues] == [arches.PARKED_QUEUE]
