"""workers.cluster: the operator YAML archive of a clusterDeployment — what is refused, the deterministic rebuild with
pinned images, Go json.Marshal of the signed object, and signatures that verify the way the agent verifies them."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile

import pytest

from tests.openssl_check import openssl_verify
from workers import cluster
from workers.definition import DefinitionError, read_definition
from workers.signing import PemSigner, generate_private_key_pem, sign_deployment, verify_deployment

TAG = "registry.example.com:5000/team/op_amd64:7.3.0"
PINNED = "registry.example.com:5000/team/op_amd64@sha256:" + "ab" * 32
DEPLOY_YAML = b"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: op
  namespace: opns
spec:
  template:
    spec:
      containers:
        - name: op
          image: registry.example.com:5000/team/op_amd64:7.3.0   # the operator
        - name: side
          image: "docker.io/library/busybox:1.36"
"""
NS_YAML = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edge-op\n"


def targz(entries: list[tuple[str, bytes | None, bytes]], *, mtime: int = 1234) -> bytes:
    """entries: (name, data or None for a dir, tar type)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.type = mtime, kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buf.getvalue(), mtime=mtime)


GOOD = targz([("deploy", None, tarfile.DIRTYPE), ("deploy/op.yaml", DEPLOY_YAML, tarfile.REGTYPE),
              ("ns.yml", NS_YAML, tarfile.REGTYPE)])


def test_a_good_archive_is_read_with_its_images():
    members = cluster.read_archive(GOOD, "op.tar.gz", max_bytes=1 << 20)
    assert [m.name for m in members] == ["deploy", "deploy/op.yaml", "ns.yml"]
    assert cluster.images(members) == [TAG, "docker.io/library/busybox:1.36"]
    assert cluster.namespace(members) == "edge-op"


@pytest.mark.parametrize(("data", "message"), [
    (b"not gzip at all", r"op\.tar\.gz is not a gzip'd tar"),
    (gzip.compress(b"gzip but no tar" * 100), r"op\.tar\.gz is not a gzip'd tar"),
    (targz([("../x.yaml", b"a: 1", tarfile.REGTYPE)]), r"member '\.\./x\.yaml' has an unsafe name"),
    (targz([("/abs.yaml", b"a: 1", tarfile.REGTYPE)]), r"member '/abs\.yaml' has an unsafe name"),
    (targz([("link.yaml", None, tarfile.SYMTYPE)]), r"member 'link\.yaml' is a symlink"),
    (targz([("run.sh", b"rm -rf /", tarfile.REGTYPE)]), r"member 'run\.sh' is not a YAML file"),
    (targz([("d", None, tarfile.DIRTYPE)]), r"holds no YAML file"),
])
def test_bad_archives_are_refused_naming_the_member(data, message):
    with pytest.raises(DefinitionError, match=message):
        cluster.read_archive(data, "op.tar.gz", max_bytes=1 << 20)


def test_oversize_and_gzip_bombs_are_refused():
    with pytest.raises(DefinitionError, match=r"over the 10-byte cap \(setting cluster_archive_max_bytes\)"):
        cluster.read_archive(GOOD, "op.tar.gz", max_bytes=10)
    bomb = targz([("big.yaml", b"a" * 200_000, tarfile.REGTYPE)])
    with pytest.raises(DefinitionError, match=r"unpacks to more than"):
        cluster.read_archive(bomb, "op.tar.gz", max_bytes=50_000)


def test_the_rebuild_is_deterministic_and_rewrites_only_image_values():
    members = cluster.read_archive(GOOD, "op.tar.gz", max_bytes=1 << 20)
    other = cluster.read_archive(targz([("ns.yml", NS_YAML, tarfile.REGTYPE),
                                        ("deploy/op.yaml", DEPLOY_YAML, tarfile.REGTYPE),
                                        ("deploy", None, tarfile.DIRTYPE)], mtime=999), "o", max_bytes=1 << 20)
    pins = {TAG: PINNED}
    first = cluster.build_archive(cluster.rewrite(members, pins))
    assert first == cluster.build_archive(cluster.rewrite(other, pins))  # order and mtimes do not matter
    rebuilt = {m.name: m.data for m in cluster.read_archive(first, "r", max_bytes=1 << 20)}
    assert rebuilt["deploy/op.yaml"] == DEPLOY_YAML.replace(TAG.encode(), PINNED.encode())  # comment, quotes kept
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        assert {(i.mtime, i.uid, i.gid, i.uname) for i in tar} == {(0, 0, 0, "")}
    assert first[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_classify_pins_foreign_tags_and_refuses_our_image_of_another_version():
    own = {"amd64": TAG}
    refs = [TAG, "busybox:1.36", "quay.io/x/y@sha256:" + "cd" * 32]
    assert cluster.classify(refs, own_tags=own, image_base=TAG.split("_amd64")[0], name="op") == ["busybox:1.36"]
    with pytest.raises(DefinitionError, match="looks like the image edgebot builds"):
        cluster.classify([TAG.replace("7.3.0", "7.2.9")], own_tags=own, image_base=TAG.split("_amd64")[0], name="op")
    with pytest.raises(DefinitionError, match=r"not the arm64 image of this release .*`--arch amd64`"):
        cluster.classify([TAG], own_tags={"arm64": TAG.replace("amd64", "arm64")},
                         image_base=TAG.split("_amd64")[0], name="op")


def test_go_json_escapes_like_go_json_marshal():
    # Go: json.Marshal(map[string]interface{}{"z": "<a&b>", "a": 1.0, "m": "\u2028é"}) ==
    # {"a":1,"m":"\u2028é","z":"\u003ca\u0026b\u003e"}
    assert cluster.go_json({"z": "<a&b>", "a": 1.0, "m": "\u2028é"}) == \
        '{"a":1,"m":"\\u2028é","z":"\\u003ca\\u0026b\\u003e"}'
    # Go encoding/json floatEncoder: 'f' format between 1e-6 and 1e21, else 'e' with e-07 cleaned up to e-7
    floats = [1e-7, 1e-5, 0.1, 2.0, 1e21, 1.5e300, -0.0, 1e20, 123456789.125]
    assert cluster.go_json({"f": floats, "s": "\x00\n\b"}) == \
        '{"f":[1e-7,0.00001,0.1,2,1e+21,1.5e+300,-0,100000000000000000000,123456789.125],"s":"\\u0000\\n\\b"}'


def test_the_cluster_object_is_what_hzn_signs():
    members = cluster.read_archive(GOOD, "op.tar.gz", max_bytes=1 << 20)
    spec = {"operatorYamlArchive": "op.tar.gz", "mmsPVC": {"enable": False, "pvcSizeGB": 2}}
    text, archive = cluster.cluster_deployment_string(spec, base64.b64encode(GOOD).decode(), {TAG: PINNED})
    doc = json.loads(text)
    assert list(doc) == ["metadata", "operatorYamlArchive"]  # mmsPVC not enabled: dropped as anax does
    assert doc["metadata"] == {"namespace": "edge-op"}
    assert base64.b64decode(doc["operatorYamlArchive"]) == archive
    assert PINNED in cluster.images(cluster.archive_of(text)) and TAG not in cluster.images(cluster.archive_of(text))
    assert text == cluster.go_json(cluster.cluster_object(spec, archive, cluster.rewrite(members, {TAG: PINNED})))


def test_the_signature_verifies_like_the_agent_and_with_openssl(tmp_path):
    signer = PemSigner(generate_private_key_pem(2048), key_name="k")
    text, _ = cluster.cluster_deployment_string({"operatorYamlArchive": "op.tar.gz"},
                                                base64.b64encode(GOOD).decode(), {TAG: PINNED})
    signature = sign_deployment(signer, text)
    assert verify_deployment(signer.public_key_pem(), text, signature)
    assert openssl_verify(tmp_path, signer.public_key_pem(), text, signature).returncode == 0
    tampered = text.replace('"edge-op"', '"other"')
    assert not verify_deployment(signer.public_key_pem(), tampered, signature)


def test_a_definition_with_a_cluster_deployment_is_accepted_with_its_archive_path():
    doc = {"org": "$HZN_ORG_ID", "label": "op", "url": "op", "version": "$SERVICE_VERSION", "arch": "$ARCH",
           "sharable": "multiple", "deployment": {"services": {"op": {"image": "${DOCKER_IMAGE_BASE}_$ARCH:"
                                                                              "$SERVICE_VERSION"}}},
           "clusterDeployment": {"operatorYamlArchive": "../operator/op.tar.gz"}}
    d = read_definition(json.dumps(doc), None, org="edge", version="7.3.0", arch="amd64",
                        image_base="registry.example.com:5000/team/op", definition_name="svc/horizon/"
                        "service.definition.json")
    assert d.cluster_archive == "svc/operator/op.tar.gz"
    with pytest.raises(ValueError, match="clusterDeployment"):
        d.exchange_body('{"services":{"op":{}}}', "sig")
    body = d.exchange_body('{"services":{"op":{}}}', "sig", "{}", "csig")
    assert (body["clusterDeployment"], body["clusterDeploymentSignature"]) == ("{}", "csig")
