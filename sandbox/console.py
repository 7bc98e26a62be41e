"""`edgebot sandbox`: a terminal that plays the Slack client in front of a whole local edgebot installation.

It starts the same stack as ``make demo`` (Redis, OpenBao holding the secrets, a private Docker Engine, the TLS
registry, the Exchange and Slack stand-ins, the bot behind gunicorn, real RQ workers), then reads what you type:

* ``/edge …`` is sent to the bot as a signed slash command from the current user — the same HTTP request Slack makes,
  through Bolt's signature check — and the bot's ephemeral answer is shown;
* the #releases channel is polled in the Slack stand-in (what the bot and the workers sent to the Web API): new
  messages and messages edited in place (``chat.update``) are printed as they change, with their buttons numbered;
* ``click N`` / ``approve`` / ``reject REASON`` send a signed ``block_actions`` interaction, and a modal the bot opens
  is answered with a signed ``view_submission``, exactly as Slack would;
* ``/as NAME`` switches to another person of the sandbox workspace (see :mod:`sandbox.identities`).

Everything started is stopped on ``quit``, at the end of input and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from sandbox import render
from sandbox.identities import PEOPLE, Person, add_people, display_names, find_person, sandbox_stack
from sandbox.proc_base import StartFailed, wait_until
from sandbox.seed import seed_fleet
from sandbox.slack import SlackStandIn
from sandbox.slack_client import SlackPlatform
from sandbox.stack import CHANNEL_ID, CHANNEL_NAME, Stack
from sandbox.watch import Button, ChannelView, format_change, render_view, view_inputs

HELP = """\
  /edge TEXT            send the slash command as the current user, e.g. /edge publish hello 1.1.0 --registry local
  /as NAME              become another user: {people}
  click N               press button N of a message (numbers are shown as [N: label])
  approve [RELEASE]     press the newest Approve button (of RELEASE's thread)
  reject REASON         press the newest Reject button and submit REASON in the modal it opens
  submit TEXT           submit the open modal with TEXT in its first field;  close  dismisses it
  buttons               list the buttons on the channel's messages now
  thread [RELEASE]      draw a whole thread again (the newest one by default)
  users                 who is who, and who you are
  help                  this list
  quit                  stop everything and leave (Ctrl-C and Ctrl-D too)"""
SLASH_COMMAND = "/edge"
"""The slash command the Slack app defines (deploy/slack-app-manifest.yml)."""
SAMPLE_ARCHES = ("amd64", "arm64")
"""The arches examples/hello has a Dockerfile for."""
MODAL_WAIT = 15.0
"""Seconds to wait for the modal a Reject button opens (the bot opens it right after the click's ack)."""


class Console:
    """One terminal session: the current user, the channel as seen so far, and the open modal."""

    def __init__(self, slack: SlackStandIn, platform: SlackPlatform, out: TextIO, *,
                 poll_interval: float = 0.5) -> None:
        self.out = out
        self.names = display_names()
        self.view = ChannelView(slack, CHANNEL_ID, CHANNEL_NAME, self.names)
        self.platform = platform
        self.person: Person = PEOPLE[0]
        self.open_view: dict[str, Any] | None = None
        self.poll_interval = poll_interval
        self._print_lock = threading.RLock()
        self._state_lock = threading.RLock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._redraw_prompt = out.isatty()
        self._at_prompt = False  # the main thread waits in input(): output must draw the prompt line again
        self._ephemerals_shown = 0

    @property
    def prompt(self) -> str:
        return f"{self.person.name}> "

    # -- output -------------------------------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        """Print ``text`` above the prompt; on a terminal the prompt and what was typed so far are drawn again."""
        with self._print_lock:
            if self._redraw_prompt and self._at_prompt:
                self.out.write("\r\x1b[K" + text + "\n" + self.prompt + _line_buffer())
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def refresh(self) -> None:
        """Show what changed in the channel, new ephemerals for the current user, and a modal opened for them."""
        with self._state_lock:
            for change in self.view.poll():
                self.emit(format_change(change, self.view.channel_name))
            for text in self.view.ephemerals_for(self.person.user_id):
                self._ephemerals_shown += 1
                self.emit(_only_you(text))
            for opened in self.view.new_views_for(self.person.user_id):
                self.open_view = opened
                self.emit(render_view(opened, self.names) + "\n  (type `submit TEXT` to submit it, `close` to dismiss)")

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception as exc:  # the stand-in is being stopped, or a bug: say it, keep the console alive
                if not self._stop.is_set():
                    self.emit(f"⚠ could not read the channel: {type(exc).__name__}: {exc}")

    def start_polling(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="console-poll", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)

    # -- input ----------------------------------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Run one typed line; False when the console should end."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if word in ("quit", "exit"):
                return False
            if word == "/as":
                self.switch(rest)
            elif word == SLASH_COMMAND:
                self.slash_command(word, rest)
            elif word.startswith("/"):
                self.emit(f"{word} is not a command of this workspace's apps: edgebot's is {SLASH_COMMAND}")
            elif word == "click":
                self.click(rest)
            elif word in ("approve", "reject"):
                self.approve_or_reject(word, rest)
            elif word == "submit":
                self.submit(rest)
            elif word == "close":
                self.open_view = None
                self.emit("modal dismissed")
            elif word == "buttons":
                self.list_buttons()
            elif word == "thread":
                self.show_thread(rest or None)
            elif word == "users":
                self.list_users()
            elif word == "help":
                self.emit(self.help_text())
            else:
                self.emit(f"unknown command `{word}`: type `help` for the list")
        except httpx.HTTPError as exc:
            self.emit(f"✘ could not reach the bot: {type(exc).__name__}: {exc}")
        return True

    def help_text(self) -> str:
        return HELP.format(people=", ".join(p.name for p in PEOPLE))

    def switch(self, who: str) -> None:
        person = find_person(who) if who else None
        if person is None:
            self.emit(f"no user `{who}` in the sandbox workspace; users: {', '.join(p.name for p in PEOPLE)}")
            return
        with self._state_lock:
            self.person = person
            self.open_view = None
        self.emit(f"you are now @{person.name} ({person.user_id}, {person.role})")
        self.refresh()  # ephemerals this user got while someone else was at the keyboard

    def list_users(self) -> None:
        lines = [f"{'→' if p == self.person else ' '} @{p.name:<10} {p.user_id:<12} {p.role}" for p in PEOPLE]
        self.emit("\n".join(lines))

    def slash_command(self, command: str, text: str) -> None:
        self.emit(f"» @{self.person.name} in #{CHANNEL_NAME}: {command} {text}".rstrip())
        response = self.platform.slash_command(text, user_id=self.person.user_id, channel_id=CHANNEL_ID,
                                               channel_name=CHANNEL_NAME, command=command)
        self._show_answer(response)
        self.refresh()

    def click(self, number_text: str) -> None:
        if not number_text.isdigit():
            self.emit("click takes a button number, e.g. `click 1` (`buttons` lists them)")
            return
        button, live = self.view.button(int(number_text))
        if button is None:
            self.emit(f"there is no button {number_text}; `buttons` lists the buttons on the messages now")
        elif not live:
            self.emit(f"button {number_text} ({button.label}) is no longer on its message: the message was updated")
        else:
            self.press(button)

    def press(self, button: Button) -> httpx.Response:
        """A signed block_actions interaction for ``button``, from the current user."""
        self.emit(f"» @{self.person.name} clicks [{button.label}]")
        if button.confirm:  # Slack asks first; typing the click was the confirmation
            self.emit(f"  confirmed: {render.mrkdwn(button.confirm, self.names)}")
        response = self.platform.block_action(action_id=button.action_id, value=button.value,
                                              user_id=self.person.user_id, channel_id=button.channel_id,
                                              message_ts=button.message_ts, block_id=button.block_id or None)
        self._show_answer(response)
        return response

    def approve_or_reject(self, verb: str, rest: str) -> None:
        release_id = rest if verb == "approve" and rest else None
        button = self.view.latest_button(verb, release_id)
        if button is None:
            where = f" in the thread of {release_id}" if release_id else ""
            self.emit(f"no {verb.capitalize()} button{where} right now (`buttons` lists what can be pressed)")
            return
        if verb == "approve":
            self.press(button)
            return
        if not rest:
            self.emit("reject needs a reason, e.g. `reject wrong version`")
            return
        with self._state_lock:
            self.open_view = None
            answers_before = self._ephemerals_shown
        if self.press(button).status_code != 200:
            return
        try:  # the modal, or an ephemeral answer instead (e.g. the requester may not reject their own release)
            wait_until(lambda: self._modal_or_answer(answers_before), timeout=MODAL_WAIT, interval=0.2,
                       what="the Reject modal")
        except TimeoutError:
            self.emit(f"no modal opened within {MODAL_WAIT:.0f} s after the click; nothing submitted")
            return
        if self.open_view is not None:
            self.submit(rest)
        else:
            self.emit("no modal opened: the bot answered instead; nothing submitted")

    def _modal_or_answer(self, answers_before: int) -> bool:
        self.refresh()
        return self.open_view is not None or self._ephemerals_shown > answers_before

    def submit(self, text: str) -> None:
        with self._state_lock:
            view = self.open_view
        if view is None:
            self.emit("no modal is open")
            return
        inputs = view_inputs(view)
        values: dict[str, Any] = {}
        if inputs:
            block_id, action_id, kind = inputs[0]
            values = {block_id: {action_id: {"type": kind or "plain_text_input", "value": text}}}
        self.emit(f"» @{self.person.name} submits “{text}”")
        response = self.platform.view_submission(callback_id=str(view.get("callback_id", "")),
                                                 private_metadata=str(view.get("private_metadata", "")),
                                                 values=values, user_id=self.person.user_id)
        answer = _json(response)
        if response.status_code != 200:
            self.emit(f"✘ the bot answered HTTP {response.status_code}: {response.text[:300]}")
        elif answer.get("response_action") == "errors":
            problems = "; ".join(f"{k}: {v}" for k, v in (answer.get("errors") or {}).items())
            self.emit(f"✘ the modal stays open: {problems}")
        elif answer.get("response_action") in ("update", "push") and isinstance(answer.get("view"), dict):
            with self._state_lock:
                self.open_view = {**view, **answer["view"]}
            self.emit(render_view(answer["view"], self.names))
        else:
            with self._state_lock:
                self.open_view = None
            self.emit("modal closed")
        self.refresh()

    def list_buttons(self) -> None:
        buttons = self.view.buttons()
        if not buttons:
            self.emit("no buttons on the channel's messages right now")
            return
        roots = {m["ts"]: m for m in self.view.roots()}
        self.emit("\n".join(f"  {b.number:>3}: [{b.label}]  in thread {self.view.thread_label(roots.get(b.thread_ts))}"
                            f"  (action_id {b.action_id})" for b in buttons))

    def show_thread(self, release_id: str | None) -> None:
        root = self.view.find_root(release_id)
        if root is None:
            self.emit(f"no thread for {release_id}" if release_id else "no messages in the channel yet")
            return
        self.emit(self.view.render_thread(root["ts"]))

    def _show_answer(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            self.emit(f"✘ the bot answered HTTP {response.status_code}: {response.text[:300]}")
            return
        answer = _json(response)
        if answer.get("text") or answer.get("blocks"):
            shown = render.message(answer, self.names)
            self.emit(shown if answer.get("response_type") == "in_channel" else _only_you(shown))

    # -- the session ----------------------------------------------------------------------------------------------
    def banner(self, stack: Stack) -> str:
        vault = f"OpenBao at {stack.vault.url}" if stack.vault else "environment variables"
        return "\n".join([
            f"edgebot sandbox: the Slack workspace {stack.slack.team_id}, channel #{CHANNEL_NAME}, the bot and workers "
            "running locally",
            f"  bot {stack.bot_url} · secrets from {vault} · config {stack.config_path}",
            self.help_text(),
            f"You are @{self.person.name}. Try: /edge publish hello 1.1.0 --registry local",
        ])

    def run(self, stdin: TextIO) -> None:
        """Read lines until ``quit`` or the end of input (Ctrl-D); Ctrl-C propagates to the caller."""
        interactive = stdin.isatty()
        if interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401 - line editing and history for input()
        while True:
            try:
                with self._print_lock:
                    self._at_prompt = True
                line = input(self.prompt) if interactive else stdin.readline()
            except EOFError:
                break
            finally:
                with self._print_lock:
                    self._at_prompt = False
            if not interactive:
                if not line:
                    break
                self.emit(self.prompt + line.rstrip("\n"))
            if not self.handle(line):
                break


def _only_you(text: str) -> str:
    return "(only visible to you)\n  " + text.replace("\n", "\n  ")


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        body = json.loads(response.content)
    except ValueError:
        return {"text": response.text}
    return body if isinstance(body, dict) else {}


def _line_buffer() -> str:
    """What the user typed so far on the prompt line (readline's buffer), to draw it again after output."""
    module = sys.modules.get("readline")
    return str(module.get_line_buffer()) if module is not None else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgebot sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", default=[],
                        help="arches the sample service builds (repeatable; default amd64 and arm64)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, config) at the end")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between looks at the channel")
    args = parser.parse_args(argv)
    arches = tuple(a for value in args.arch for a in value.split(",") if a) or SAMPLE_ARCHES
    unknown = sorted(set(arches) - set(SAMPLE_ARCHES))
    if unknown:
        parser.error(f"--arch: the sample service has Dockerfiles for {', '.join(SAMPLE_ARCHES)} only, "
                     f"not {', '.join(unknown)}")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C stops everything even when started from something that ignores SIGINT (a background job of a script:
    # Python then leaves SIGINT ignored, and the children inherit that)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where every thread is, on stderr
    workdir = Path(tempfile.mkdtemp(prefix="edgebot-sandbox-"))
    stack = sandbox_stack(workdir, arches)
    console: Console | None = None
    keep = args.keep
    try:
        print("» starting Redis, OpenBao, Docker Engine, registry (TLS + auth), Exchange and Slack stand-ins, bot, "
              f"workers ({', '.join(arches)}) in {workdir}…", flush=True)
        stack.start()
        add_people(stack.slack)
        stack.wait_workers(1 + len(arches))
        print("» seeding a fleet: hello 1.0.0 on 27 simulated nodes through policies hello-canary, hello-fleet…",
              flush=True)
        seed_fleet(stack)
        console = Console(stack.slack, stack.platform(), sys.stdout, poll_interval=args.poll_interval)
        print(console.banner(stack), flush=True)
        console.start_polling()
        console.run(sys.stdin)
        return 0
    except KeyboardInterrupt:
        print("\n» interrupted", flush=True)
        return 130
    except (StartFailed, TimeoutError) as exc:  # a part did not come up: say which, keep its logs
        print(f"» the sandbox could not start: {exc}", flush=True)
        keep = True
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half of it running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if console is not None:
            console.stop_polling()
        print("» stopping everything the sandbox started…", flush=True)
        stack.stop()
        if keep:
            print(f"» kept {workdir} (config and the log of every process)", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        print("» stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
