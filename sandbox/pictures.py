"""``make pictures``: what users see in Slack, as PNGs in ``docs/images/``, drawn by headless Chromium (Debian's
``chromium``) from the Block Kit snapshots the message builders are tested against (``tests/snapshots/``), rendered
by :mod:`sandbox.blockkit_html`.

Each picture is two Chromium runs: one measures the page's height (``--dump-dom`` of a page whose only script, allowed
by its hash in the page's Content-Security-Policy, writes the height into the DOM), one screenshots exactly that
height at twice the pixel density (1.5 for the long thread). The file names and contents are deterministic.

    python -m sandbox.pictures [--out docs/images] [NAME ...]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import blockkit_html

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "tests" / "snapshots"
WIDTH = 760
SCALE = 2
TIMEOUT = 90.0
NAMES = {"U0REQUESTER": "requester", "U0ALICE": "alice", "U0BOB": "bob", "U0LEAD": "lead", "U0ONCALL": "oncall",
         "S0LEADS": "release-leads", "S0OPS": "ops", "C0RELEASES": "releases"}
"""The sandbox workspace's people, groups and channel, as the snapshots' IDs show in Slack."""

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-extensions", "--mute-audio")
"""Without the background-networking flags Chromium's own connections are refused on a closed network, noisily."""


@dataclass(frozen=True)
class Picture:
    name: str
    title: str
    caption: str
    snapshots: tuple[str, ...]
    thread: bool = False
    times: tuple[str, ...] = ()
    scale: float = SCALE
    """Device pixels per CSS pixel: 2 (sharp on high-density screens) unless the file would pass ~300 KB."""


PICTURES = (
    Picture("root", "The release's root message",
            "`/edge publish hello 1.2.3 --registry icr` answers in the channel with this message; the thread under it "
            "follows the release. Status and Cancel work until the release is published.",
            ("root_queued",)),
    Picture("progress", "Build progress in the thread",
            "One reply per step, edited in place as it runs: the source resolved to a commit, then each arch's build.",
            ("root_queued", "stage_source", "stage_build"), thread=True,
            times=("10:42 AM", "10:42 AM", "10:42 AM")),
    Picture("approval", "The approval card",
            "What the approvers check before anything reaches the Exchange: digests, signatures, the smoke run's "
            "output per arch, the signing key and what the release moves. Approve and Reject count per person.",
            ("approval_card_smoke",)),
    Picture("summary", "The summary of a published release",
            "Per arch: image digest, Exchange service, signature, build time; then the time each step took.",
            ("summary_succeeded",)),
    Picture("rollout", "Rollout progress",
            "After publishing (or `/edge deploy`), one message per rollout stage, edited at every poll: how many "
            "online nodes run the new version, and the counts of old, failing, offline and waiting nodes.",
            ("rollout_stage_healthy",), times=("11:05 AM",)),
    Picture("rollback", "A rollout stage rolled back",
            "The canary stage found failing nodes: it says why each failed and what to do, edgebot pointed every "
            "policy it changed back to the previous version, and the next stage never started.",
            ("rollout_stage_rolled_back", "rollout_stage_pending"), times=("11:03 AM",)),
    Picture("failure", "A failed release",
            "The failing step's cause and the end of its log, and what was already done (nothing half-published).",
            ("summary_failed",)),
    Picture("thread", "A whole release thread",
            "The root message, edited to its outcome, and the replies of a release that was built, approved, "
            "published and rolled out.",
            ("root_succeeded", "stage_source", "stage_build", "approval_card_approved", "summary_rolled_out"),
            thread=True, times=("10:42 AM", "10:42 AM", "10:43 AM", "10:51 AM", "10:53 AM"), scale=1.5),
)

SOURCES = "sources.json"
"""Beside the PNGs: the SHA-256 of the HTML each was drawn from, so a test notices a picture older than its messages."""

_MEASURE_SCRIPT = ("document.body.setAttribute('data-height', "
                   "String(Math.ceil(document.documentElement.getBoundingClientRect().height)));")
_HEIGHT_RE = re.compile(r'data-height="(\d+)"')


def load(snapshot: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SNAPSHOTS / f"{snapshot}.json").read_text())
    return data


def html(picture: Picture) -> str:
    return blockkit_html.page([load(s) for s in picture.snapshots], NAMES, title=picture.title, thread=picture.thread,
                              times=picture.times, width=WIDTH)


def source_digest(picture: Picture) -> str:
    return hashlib.sha256(html(picture).encode()).hexdigest()


def record(out_dir: Path, picture: Picture) -> None:
    path = out_dir / SOURCES
    known = json.loads(path.read_text()) if path.exists() else {}
    known[picture.name] = source_digest(picture)
    path.write_text(json.dumps(dict(sorted(known.items())), indent=2) + "\n")


def measuring(page: str) -> str:
    """The page plus the one script that writes its height, allowed by hash (no other script could run)."""
    digest = base64.b64encode(hashlib.sha256(_MEASURE_SCRIPT.encode()).digest()).decode()
    page = page.replace("default-src 'none';", f"default-src 'none'; script-src 'sha256-{digest}';", 1)
    return page.replace("</body>", f"<script>{_MEASURE_SCRIPT}</script></body>", 1)


class ChromiumError(RuntimeError):
    pass


def chromium() -> str:
    """Debian's ``chromium`` (``$EDGEBOT_CHROMIUM`` overrides); a clear error when it is not installed."""
    for candidate in (os.environ.get("EDGEBOT_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise ChromiumError("headless Chromium is not installed: run `scripts/install-system-deps.sh` "
                        "(it installs Debian's chromium) or set EDGEBOT_CHROMIUM to its path")


def _run(args: list[str], workdir: Path) -> str:
    profile = workdir / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=workdir,
                              env={**os.environ, "HOME": str(workdir)})
    except subprocess.TimeoutExpired as exc:
        raise ChromiumError(f"chromium did not finish within {TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-5:])
        raise ChromiumError(f"chromium exited with status {done.returncode}: {tail}")
    return done.stdout


def screenshot(page: str, out: Path, *, width: int = WIDTH, scale: float = SCALE) -> tuple[int, int]:
    """Draw ``page`` to the PNG ``out``, cropped to the page's height; returns the CSS size (width, height)."""
    with tempfile.TemporaryDirectory(prefix="edgebot-pictures-") as tmp:
        work = Path(tmp)
        (work / "measure.html").write_text(measuring(page), encoding="utf-8")
        dom = _run([f"--window-size={width},600", "--dump-dom", (work / "measure.html").as_uri()], work)
        found = _HEIGHT_RE.search(dom)
        if not found:
            raise ChromiumError("chromium did not report the page's height")
        height = max(int(found.group(1)), 1)
        (work / "page.html").write_text(page, encoding="utf-8")
        shot = work / "shot.png"
        _run([f"--window-size={width},{height}", f"--force-device-scale-factor={scale}",
              f"--screenshot={shot}", (work / "page.html").as_uri()], work)
        if not shot.exists() or shot.stat().st_size == 0:
            raise ChromiumError("chromium wrote no screenshot")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out)
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.pictures", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("names", nargs="*", help="pictures to draw (default: all): "
                        + ", ".join(p.name for p in PICTURES))
    args = parser.parse_args(argv)
    unknown = set(args.names) - {p.name for p in PICTURES}
    if unknown:
        parser.error(f"no picture named {', '.join(sorted(unknown))}")
    try:
        for picture in PICTURES:
            if args.names and picture.name not in args.names:
                continue
            out = args.out / f"{picture.name}.png"
            w, h = screenshot(html(picture), out, scale=picture.scale)
            record(args.out, picture)
            print(f"{out} · {w}×{h} CSS px · {out.stat().st_size // 1024} KB")
    except ChromiumError as exc:
        print(f"make pictures: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
