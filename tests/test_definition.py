"""workers.definition: hzn's comment stripping and Go os.Expand, hzn.json variables, image references, the checks
edgebot makes before building, pinning and the signed string."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.definition import (
    DefinitionError,
    ImageRef,
    deployment_string,
    expand_vars,
    hzn_json_vars,
    parse_image_ref,
    pin_images,
    read_definition,
    strip_comments,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4

# Like open-horizon/examples edge/services/helloworld/horizon/service.definition.json (written here, not copied).
HELLO_DEFINITION = """{
    /* the hello service: one container, built by edgebot per arch */
    "org": "$HZN_ORG_ID",
    "label": "$SERVICE_NAME for $ARCH",
    "description": "Says hello",
    "public": true,
    "documentation": "https://example.com/hello",
    "url": "$SERVICE_NAME",
    "version": "$SERVICE_VERSION",
    "arch": "$ARCH",
    "sharable": "multiple",
    "requiredServices": [{"url": "ibm.gps", "org": "IBM", "version": "2.0.3", "arch": "$ARCH"}],
    "userInput": [{"name": "HW_WHO", "label": "Who to greet", "type": "string", "defaultValue": "World"}],
    "deployment": {
        "services": {
            "hello": {
                "image": "${DOCKER_IMAGE_BASE}_$ARCH:$SERVICE_VERSION",
                "environment": ["GREETING=héllo <&>"],
                "privileged": false
            }
        }
    }
}
"""
HELLO_HZN_JSON = """{
    /* project config */
    "HZN_ORG_ID": "theirorg",
    "MetadataVars": {
        "DOCKER_IMAGE_BASE": "openhorizon/ibm.helloworld",
        "SERVICE_NAME": "ibm.hello",
        "SERVICE_VERSION": "1.0.0"
    }
}"""
BASE = "registry.example.com:5000/team/hello"


def read(text: str = HELLO_DEFINITION, hzn: str | None = HELLO_HZN_JSON, **kw: str):
    args = {"org": "edge", "version": "1.2.3", "arch": "amd64", "image_base": BASE, **kw}
    return read_definition(text, hzn, **args)


def mutate(**changes: object) -> str:
    """The hello definition (already as JSON without comments) with top-level fields replaced or removed (None)."""
    doc = json.loads(strip_comments(HELLO_DEFINITION))
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc)


# -- comments and Go os.Expand ----------------------------------------------------------------------------------------

def test_comments_are_stripped_non_greedily_across_lines_and_inside_strings_like_hzn():
    text = '{/* a\n b */"k": "v /* gone */ w", /* c */ "n": 1}'
    assert strip_comments(text) == '{"k": "v  w",  "n": 1}'
    assert strip_comments("/* unclosed") == "/* unclosed"


@pytest.mark.parametrize(
    ("text", "expected", "undefined"),
    [
        ("$A and ${A}", "x and x", []),
        ("${B_1}z", "yz", []),
        ("$B_1z", "", ["B_1z"]),  # names run over letters, digits and underscores
        ("$9lives", "ninelives", []),  # a digit is a one-character special name
        ("${12}", "", ["12"]),  # but braces take everything up to }
        ("$$", "pid", []),  # $$ is the special name "$"
        ("$$A", "pidA", []),
        ("${$}", "pid", []),
        ("cost: 5$", "cost: 5$", []),  # a trailing $ stays
        ("a $ b", "a $ b", []),  # $ not followed by a name stays
        ("${}", "", []),  # bad syntax: eaten
        ("${A", "A", []),  # unclosed: "${" is eaten
        ("${A-default}", "", ["A-default"]),  # no shell defaults in Go
        ("$-x", "x", ["-"]),
        ("é$A€", "éx€", []),
        ("$UNSET $UNSET ${OTHER} $EMPTY", "   ", ["UNSET", "OTHER", "EMPTY"]),  # empty counts, like hzn's warning
    ],
)
def test_expand_vars_follows_go_os_expand(text, expected, undefined):
    env = {"A": "x", "B_1": "y", "9": "nine", "$": "pid", "EMPTY": ""}
    assert expand_vars(text, env) == (expected, undefined)


@given(st.text(alphabet=st.sampled_from(list("${}AB_1 é-*\n\"")), max_size=60),
       st.dictionaries(st.sampled_from(["A", "B_1", "1", "$", "AB"]), st.text(max_size=5)))
def test_expand_vars_never_raises_and_leaves_dollar_free_text_alone(text, env):
    out, undefined = expand_vars(text, env)
    assert isinstance(out, str)
    assert all(name not in env or env[name] == "" for name in undefined)
    if "$" not in text:
        assert (out, undefined) == (text, [])


@given(st.text(max_size=200))
def test_expand_vars_never_raises_on_arbitrary_text(text):
    out, undefined = expand_vars(text, {})
    assert isinstance(out, str) and isinstance(undefined, list)


# -- hzn.json --------------------------------------------------------------------------------------------------------

def test_hzn_json_gives_known_top_level_fields_and_metadata_vars():
    text = """{
        /* comment */
        "HZN_ORG_ID": "top", "HZN_EXCHANGE_URL": "", "NOT_A_FIELD": "ignored", "hzn_device_id": "dev1",
        "MetadataVars": {"SERVICE_NAME": "svc", "HZN_ORG_ID": "meta", "EMPTY": null}
    }"""
    assert hzn_json_vars(text) == {"HZN_ORG_ID": "top", "HZN_DEVICE_ID": "dev1", "SERVICE_NAME": "svc", "EMPTY": ""}


def test_hzn_json_is_not_expanded_and_wrong_types_are_named():
    assert hzn_json_vars('{"MetadataVars": {"X": "$Y"}}') == {"X": "$Y"}
    with pytest.raises(DefinitionError, match=r"horizon/hzn.json: MetadataVars.PORT must be a string"):
        hzn_json_vars('{"MetadataVars": {"PORT": 8080}}')
    with pytest.raises(DefinitionError, match=r"horizon/hzn.json: not valid JSON"):
        hzn_json_vars('{"MetadataVars": ')


# -- image references -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("localhost/foo", ("", "localhost/foo", "", "")),  # no "." or ":" → Docker Hub path
        ("localhost:5000/foo", ("localhost:5000", "foo", "", "")),
        ("foo:1.0", ("", "foo", "1.0", "")),
        ("us.icr.io/ns/hello_arm64:1.2.3", ("us.icr.io", "ns/hello_arm64", "1.2.3", "")),
        (f"reg.example.com:5000/a/b@{DIGEST}", ("reg.example.com:5000", "a/b", "", DIGEST)),
        (f"reg:5000/a/b:t@{DIGEST}", ("reg:5000", "a/b", "t", DIGEST)),
    ],
)
def test_parse_image_ref_like_parse_docker_image_path(ref, parts):
    parsed = parse_image_ref(ref)
    assert parsed == ImageRef(*parts)
    assert str(parsed) == ref


def test_parse_image_ref_refuses_what_has_no_path():
    with pytest.raises(DefinitionError, match="cannot parse image reference"):
        parse_image_ref(f"@{DIGEST}")
    assert parse_image_ref(f"a.io/b@{DIGEST}").pinned
    assert not parse_image_ref("a.io/b@sha256:abc").pinned


# -- the hello definition ---------------------------------------------------------------------------------------------

def test_hello_definition_expands_to_the_release_values_and_the_chosen_registry():
    d = read()
    assert (d.org, d.url, d.version, d.arch) == ("edge", "ibm.hello", "1.2.3", "amd64")
    assert d.raw["label"] == "ibm.hello for amd64"
    assert d.raw["org"] == "edge"  # the command's org beats hzn.json's HZN_ORG_ID
    assert d.deployment["services"]["hello"]["image"] == f"{BASE}_amd64:1.2.3"
    assert d.built == {"hello": f"{BASE}_amd64:1.2.3"}
    assert d.raw["requiredServices"][0]["arch"] == "amd64"
    json.dumps(d.raw)  # stored with the release: must be JSON


def test_command_values_override_hzn_json_for_every_edgebot_variable():
    hzn = json.dumps({"MetadataVars": {"ARCH": "arm", "SERVICE_VERSION": "0.0.1", "DOCKER_IMAGE_BASE": "x/y",
                                       "HZN_ORG_ID": "other", "SERVICE_NAME": "s"}})
    d = read(hzn=hzn, arch="arm64", version="2.0")
    assert (d.raw["arch"], d.raw["version"], d.raw["org"]) == ("arm64", "2.0", "edge")
    assert d.built == {"hello": f"{BASE}_arm64:2.0"}


def test_definition_without_hzn_json_uses_only_edgebot_variables():
    text = HELLO_DEFINITION.replace("$SERVICE_NAME", "hello")
    d = read(text, hzn=None)
    assert d.url == "hello"


def test_exchange_body_mirrors_what_hzn_sends():
    d = read()
    dep = deployment_string(pin_images(d.deployment, {"hello": f"{BASE}_amd64@{DIGEST}"}))
    body = d.exchange_body(dep, "c2ln")
    assert set(body) == {
        "label", "description", "public", "documentation", "url", "version", "arch", "sharable", "matchHardware",
        "requiredServices", "userInput", "deployment", "deploymentSignature", "clusterDeployment",
        "clusterDeploymentSignature",
    }
    assert body["deployment"] == dep and body["deploymentSignature"] == "c2ln"
    assert body["clusterDeployment"] == "" and body["clusterDeploymentSignature"] == ""
    assert (body["url"], body["version"], body["arch"], body["public"]) == ("ibm.hello", "1.2.3", "amd64", True)
    assert body["matchHardware"] is None
    assert body["requiredServices"] == [
        {"url": "ibm.gps", "org": "IBM", "version": "2.0.3", "versionRange": "2.0.3", "arch": "amd64"}
    ]
    assert body["userInput"] == [{"name": "HW_WHO", "label": "Who to greet", "type": "string", "defaultValue": "World"}]
    with pytest.raises(ValueError, match="containers differ"):
        d.exchange_body('{"services":{"other":{"image":"x"}}}', "c2ln")


# -- refusals ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "message"),
    [
        (mutate(version="1.0.0"), r'"version" is "1.0.0" but the release is 1.2.3: set "version": "\$SERVICE_VERSION"'),
        (mutate(arch="arm"), r'"arch" is "arm" but this build is for amd64: set "arch": "\$ARCH"'),
        (mutate(org="someoneelse"), r'"org" is "someoneelse" but the release is for org edge'),
        (mutate(url=None), r'"url" is missing'),
        (mutate(deployment=None), r'"deployment" must be an object'),
        (mutate(deployment={"services": {}}), r'"deployment.services" is missing or empty'),
        (mutate(deployment={"nothing": 1}), r'"deployment.services" is missing or empty'),
        (mutate(deployment={"services": {"web": {"privileged": True}}}),
         r'container "web" in deployment.services has no "image"'),
        (mutate(deployment='{"services":{}}', deploymentSignature="abc"), r'"deployment" is a string \(pre-signed\)'),
        (mutate(clusterDeployment={"operatorYamlArchive": "/etc/op.tar.gz"}), r'.*is an absolute path'),
        (mutate(clusterDeployment={"operatorYamlArchive": "../../op.tar.gz"}), r'.*points outside the repository'),
        (mutate(clusterDeployment={"operatorYamlArchive": ""}), r'"clusterDeployment.operatorYamlArchive" must be'),
        (mutate(clusterDeployment={"operatorYamlArchive": "o.tgz", "metadata": {}}), r'.*metadata" must not be set'),
        (mutate(deployment=None, clusterDeployment={"operatorYamlArchive": "o.tgz"}), r'has a "clusterDeployment" but'),
        (mutate(public="yes"), r'"public" must be true or false, not "yes"'),
        (mutate(sharable="shared"), r'"sharable" is "shared": use "multiple"'),
    ],
)
def test_each_refusal_names_the_file_the_field_and_the_fix(text, message):
    with pytest.raises(DefinitionError, match=r"^horizon/service\.definition\.json: " + message):
        read(text)


def test_an_undefined_variable_is_named_with_where_to_define_it():
    text = HELLO_DEFINITION.replace('"Says hello"', '"$GREETER says ${WHAT}"')
    with pytest.raises(DefinitionError) as exc:
        read(text)
    msg = str(exc.value)
    assert msg.startswith("horizon/service.definition.json: uses undefined variables $GREETER, $WHAT")
    assert "define them in MetadataVars in horizon/hzn.json, or remove them" in msg
    with pytest.raises(DefinitionError, match=r"define it in MetadataVars in horizon/hzn.json \(create the file\)"):
        read(HELLO_DEFINITION, hzn=None)  # $SERVICE_NAME has nowhere to come from


def test_an_org_that_equals_the_release_org_or_is_empty_is_fine():
    assert read(mutate(org="edge")).org == "edge"
    assert read(mutate(org="")).org == "edge"


@pytest.mark.parametrize("image", [f"{BASE}_amd64:1.2.2", f"{BASE}_arm64:1.2.3", f"{BASE}_amd64"])
def test_the_release_image_with_another_tag_or_arch_is_refused(image):
    """An image in edgebot's own repository that is not this release's is a mistake (a stale version, another arch),
    never a third-party image to pin."""
    text = mutate(deployment={"services": {"hello": {"image": image}}})
    with pytest.raises(DefinitionError) as exc:
        read(text)
    msg = str(exc.value)
    assert f'container "hello" uses image {image}, which looks like the image edgebot builds' in msg
    assert "${DOCKER_IMAGE_BASE}_$ARCH:$SERVICE_VERSION" in msg and f"{BASE}_amd64:1.2.3" in msg


@pytest.mark.parametrize("image", ["nginx@sha256:abc", "@sha256:" + "a" * 64, ""])
def test_an_image_that_is_no_reference_or_has_a_bad_digest_is_refused(image):
    text = mutate(deployment={"services": {"hello": {"image": "${DOCKER_IMAGE_BASE}_$ARCH:$SERVICE_VERSION"},
                                           "side": {"image": image}}})
    with pytest.raises(DefinitionError, match='container "side"'):
        read(text)


@pytest.mark.parametrize("image", ["docker.io/library/nginx:1.25", "quay.io/prometheus/node-exporter:v1.8.0",
                                   "redis:7", "reg.example:5000/vendor/agent"])
def test_a_third_party_image_by_tag_is_accepted_to_be_pinned_at_release_time(image):
    text = mutate(deployment={"services": {"hello": {"image": "${DOCKER_IMAGE_BASE}_$ARCH:$SERVICE_VERSION"},
                                           "side": {"image": image}}})
    d = read(text)
    assert d.built == {"hello": f"{BASE}_amd64:1.2.3"} and d.external == {"side": image}


def test_a_sidecar_pinned_by_digest_is_accepted_but_not_built():
    sidecar = f"docker.io/library/redis@{DIGEST}"
    text = mutate(deployment={"services": {"hello": {"image": "${DOCKER_IMAGE_BASE}_$ARCH:$SERVICE_VERSION"},
                                           "cache": {"image": sidecar}}})
    d = read(text)
    assert d.built == {"hello": f"{BASE}_amd64:1.2.3"}
    assert d.deployment["services"]["cache"]["image"] == sidecar


def test_invalid_json_reports_the_line_and_column_of_the_file_as_written():
    text = '{\n  /* a comment\n     over three\n     lines */\n  "url": "$SERVICE_NAME",\n  "version": 1.2.3\n}\n'
    with pytest.raises(DefinitionError, match=r"not valid JSON at line 6, column 17 \(Expecting ',' delimiter\)"):
        read(text)


# -- pinning and the signed string ------------------------------------------------------------------------------------

def test_pin_images_replaces_only_the_named_images_in_a_copy():
    deployment: dict[str, Any] = {"services": {"hello": {"image": f"{BASE}_amd64:1.2.3", "ports": [1]},
                                               "cache": {"image": f"redis@{DIGEST}"}}}
    pinned = pin_images(deployment, {"hello": f"{BASE}_amd64@{DIGEST}"})
    assert pinned["services"]["hello"] == {"image": f"{BASE}_amd64@{DIGEST}", "ports": [1]}
    assert pinned["services"]["cache"] == deployment["services"]["cache"]
    assert deployment["services"]["hello"]["image"] == f"{BASE}_amd64:1.2.3"  # the input is untouched
    with pytest.raises(DefinitionError, match='no such container'):
        pin_images(deployment, {"web": f"{BASE}_amd64@{DIGEST}"})
    with pytest.raises(DefinitionError, match="expected host/path@sha256"):
        pin_images(deployment, {"hello": f"{BASE}_amd64:1.2.3@{DIGEST}"})


def test_deployment_string_is_compact_sorted_and_utf8():
    dep = {"services": {"b": {"image": "x", "environment": ["É=<&>"]}, "a": {"z": 1, "image": "y"}}}
    text = deployment_string(dep)
    assert text == '{"services":{"a":{"image":"y","z":1},"b":{"environment":["É=<&>"],"image":"x"}}}'
    assert json.loads(text) == dep
    assert deployment_string(json.loads(text)) == text  # stable through a JSON round trip


# -- hostile repositories: size caps (issue 12) -----------------------------------------------------------------------

def test_an_oversized_definition_is_refused_before_it_is_parsed() -> None:
    import tracemalloc

    big = mutate(description="x" * (20 * 1024 * 1024))  # a 20 MB definition: ~900 MB of worker memory to parse
    tracemalloc.start()
    try:
        with pytest.raises(DefinitionError) as refused:
            read(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(refused.value) == (f"horizon/service.definition.json is {len(big.encode())} bytes, over the "
                                  "1048576-byte cap (setting source_file_max_bytes): shrink the file")
    assert peak < 64 * 1024 * 1024, peak  # one UTF-8 copy to measure it, nothing parsed
    with pytest.raises(DefinitionError, match=r"horizon/hzn.json is \d+ bytes, over the 1000-byte cap"):
        read(HELLO_DEFINITION, HELLO_HZN_JSON + " " * 1000, max_bytes=1000)
    assert read(HELLO_DEFINITION, max_bytes=2 * len(HELLO_DEFINITION.encode())).arch == "amd64"


def test_a_small_definition_that_expands_past_the_cap_is_refused() -> None:
    # 100 KB of hzn.json value, referenced 10,000 times: 1 GB once expanded, from two files under the cap
    hzn = json.dumps({"MetadataVars": {"BLOB": "y" * 100_000}})
    definition = mutate(description="$BLOB" * 10_000)
    with pytest.raises(DefinitionError, match=r"expanding its \$VARs \(from horizon/hzn.json\) would make it longer "
                                              r"than the 1048576-character cap"):
        read(definition, hzn)
