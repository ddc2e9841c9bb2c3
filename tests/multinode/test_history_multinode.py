"""File history on two nodes sharing one root and one Redis (docs/history.md).

The catalogue, the pins, the trash and the blobs are files under the shared root, so a version
made through one node is listed, downloaded and restored through the other, and a delete made
through one node is undone through the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.client.conftest import wait_until
from tests.file_sync.conftest import http, operations
from tests.file_sync.test_blocks import MiB, random_bytes
from tests.file_sync.test_history import put, settled, sha, versions
from tests.multinode.conftest import StartNode

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_version_made_through_a_is_listed_and_restored_through_b(
    start_node: StartNode, shared_root: Path
) -> None:
    a, b = start_node("a"), start_node("b")
    old, new = random_bytes(3 * MiB, 1), random_bytes(3 * MiB, 2)
    put(a, "doc.bin", old, client="laptop")
    put(a, "doc.bin", new, client="laptop")
    settled(a)
    listed = versions(b, "doc.bin")
    assert [v["hash"] for v in listed["versions"]] == [sha(old)]
    assert listed["versions"][0]["source_client"] == "laptop"
    assert listed["current"]["hash"] == sha(new)
    version = listed["versions"][0]["id"]
    body = http("GET", f"{b.url}/api/versions/doc.bin?version={version}")
    assert body.status == 200 and body.body == old
    reply = http("POST", f"{b.url}/api/restore", json_body={"path": "doc.bin", "version": version})
    assert reply.status == 200, reply.body
    assert (shared_root / "doc.bin").read_bytes() == old
    # Both nodes list what the restore kept, and journal one Update for it.
    for node in (a, b):
        assert [v["hash"] for v in versions(node, "doc.bin")["versions"]] == [sha(new), sha(old)]
    wait_until(lambda: sum("Update" in op for op in operations(a)) == 2, 20, what="the Update on A")


def test_a_delete_through_a_is_restored_from_the_trash_through_b(
    start_node: StartNode, shared_root: Path
) -> None:
    a, b = start_node("a"), start_node("b")
    put(a, "dir/x.txt", b"x", client="laptop")
    put(a, "dir/sub/y.txt", b"y", client="laptop")
    assert http("DELETE", f"{a.url}/api/files/dir", headers={"X-Quantum-Client": "laptop"}).status
    assert not (shared_root / "dir").exists()
    (item,) = http("GET", f"{b.url}/api/trash").json()["items"]
    assert (item["path"], item["files"], item["source_client"]) == ("dir", 2, "laptop")
    reply = http("POST", f"{b.url}/api/trash/restore", json_body={"ids": [item["id"]]})
    assert reply.json() == {"restored": [{"id": item["id"], "path": "dir"}], "conflicts": []}
    assert (shared_root / "dir/x.txt").read_bytes() == b"x"
    assert (shared_root / "dir/sub/y.txt").read_bytes() == b"y"
    for node in (a, b):
        assert http("GET", f"{node.url}/api/trash").json()["items"] == []

    def created_on_a() -> bool:
        paths = {op["Create"]["metadata"]["path"] for op in operations(a) if "Create" in op}
        return {"dir/x.txt", "dir/sub/y.txt"} <= paths

    wait_until(created_on_a, 20, what="the restore's Creates journaled for A's clients")
