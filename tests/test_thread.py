"""The thread reporter when Slack cannot be reached at all: reporting is best effort, a release never fails for it."""

from __future__ import annotations

import redis

from edgebot.release import Release
from edgebot.store import ReleaseStore
from edgebot.thread import ThreadReporter, slack_client
from sandbox.proc_base import free_port
from sandbox.slack import SlackStandIn


def _release() -> Release:
    return Release(release_id="r-0ff1ne", team_id="T0EDGE", channel_id="C0RELEASES", user_id="U0REQUESTER",
                   service="hello", version="1.0.0", org="acme", registry="local", arches=["amd64"])


def test_unreachable_slack_is_logged_not_raised_and_the_next_report_repaints(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release())
    down = ThreadReporter(slack_client("xoxb-t", f"http://127.0.0.1:{free_port()}/api/"), store)
    assert down.ensure_root("r-0ff1ne") == ""  # connection refused: no exception, no ts recorded
    down.stage("r-0ff1ne", "source")
    down.summary("r-0ff1ne")
    assert store.require("r-0ff1ne").message_ts == ""

    with SlackStandIn(bot_token="xoxb-t") as slack:
        slack.add_channel("C0RELEASES", "releases")
        up = ThreadReporter(slack_client("xoxb-t", slack.api_url), store)
        ts = up.ensure_root("r-0ff1ne")
        assert ts and store.require("r-0ff1ne").message_ts == ts
        assert [m["ts"] for m in slack.messages("C0RELEASES")] == [ts]
