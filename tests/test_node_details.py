"""The typed node-details decoder (edgebot.node_details): what a rollout reads, nothing more, and never a crash."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from edgebot import fleet_messages
from edgebot.fleet_summary import Target, summarize
from edgebot.node_details import Node, NodeDetailsUnreadable, decode, from_dicts
from sandbox.exchange import ExchangeStandIn

ORG = "acme"


def _answer_of_the_standin() -> bytes:
    """A real node-details answer: the stand-in's, with one node running 1.0.0 and one failing it."""
    standin = ExchangeStandIn()
    standin.start()
    try:
        standin.add_user(ORG, "admin", "pw", admin=True)
        standin.add_node(ORG, "n1", "arm64", properties=[{"name": "group", "value": "canary"}])
        standin.add_node(ORG, "n2", "amd64")
        standin.set_node_services(ORG, "n1", [{"orgid": ORG, "serviceUrl": "hello", "version": "1.0.0",
                                               "arch": "arm64", "containerStatus": [{"name": "hello",
                                                                                     "state": "running"}]}])
        with httpx.Client(base_url=standin.url + "/", auth=(f"{ORG}/admin", "pw")) as client:
            response = client.get(f"orgs/{ORG}/node-details")
            response.raise_for_status()
            return response.content
    finally:
        standin.stop()


def test_the_standins_answer_decodes_to_what_json_says() -> None:
    raw = _answer_of_the_standin()
    parsed = {n["id"]: n for n in json.loads(raw)}
    nodes = {n.id: n for n in decode(raw)}
    assert set(nodes) == set(parsed) == {f"{ORG}/n1", f"{ORG}/n2"}
    one = nodes[f"{ORG}/n1"]
    assert (one.name, one.arch, one.last_heartbeat) == ("n1", "arm64", parsed[f"{ORG}/n1"]["lastHeartbeat"])
    assert one.properties == [{"name": "group", "value": "canary"}]
    assert one.services is not None and one.services[0].url == "hello" and one.services[0].version == "1.0.0"
    assert one.services[0].containers is not None and one.services[0].containers[0].state == "running"
    assert one.label == "n1"


def test_missing_and_null_fields_are_tolerated_as_the_exchange_makes_them_optional() -> None:
    nodes = decode(b'[{"id": "acme/x", "name": null, "pattern": null, "services": null, "errors": null,'
                   b' "properties": null, "constraints": null, "lastHeartbeat": null}, {"id": "acme/y"}]')
    assert [n.label for n in nodes] == ["acme/x", "acme/y"]
    counts = summarize(nodes, org=ORG, url="hello", version="1.0.0", targets=[Target("policy", "p", "*", ())],
                       offline_after=60, now=time.time())
    assert (counts.total, counts.offline) == (2, 2), "no heartbeat: offline, never a crash"


@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b'{"nodes": []}', b'[{"id": 5}]',
                                 b'[{"id": "a", "services": [{"containerStatus": "running"}]}]'])
def test_an_answer_that_is_not_a_list_of_nodes_is_refused_by_name(raw: bytes) -> None:
    with pytest.raises(NodeDetailsUnreadable) as caught:
        decode(raw)
    assert "node-details" in str(caught.value)
    message = fleet_messages.node_details_unreadable(ORG, str(caught.value))
    assert "exchange.url" in message and "/v1" in message


def test_fields_a_rollout_never_reads_are_not_built() -> None:
    node: dict[str, Any] = {"id": "acme/n", "userInput": [{"serviceUrl": "x", "inputs": [{"name": "a", "value": 1}]}],
                            "registeredServices": [{"url": "x", "policy": "{}"}], "softwareVersions": {"h": "2"}}
    decoded = from_dicts([node])[0]
    assert isinstance(decoded, Node)
    assert not any(hasattr(decoded, name) for name in ("userInput", "registeredServices", "softwareVersions"))
