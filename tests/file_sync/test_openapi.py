"""Schemathesis against ``/api/openapi.json`` of a running server: no 5xx, and every response
matches the schema the API publishes about itself."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from quantum_file_sync.chunks import RECORDS_MEDIA_TYPE
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.file_sync.conftest import RunningQuantum, StartQuantum, file_sync_config, http

MAX_EXAMPLES = 20


@schemathesis.serializer(
    RECORDS_MEDIA_TYPE, "application/partial-upload", "application/offset+octet-stream"
)
def _binary_bodies(_ctx: object, value: object) -> bytes:
    """Generated chunk-record and upload bodies: whatever bytes hypothesis made."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    server = start_module_quantum(file_sync_config(enable_upload=True, max_upload_size="1MiB"))
    (server.root / "docs").mkdir()
    (server.root / "docs" / "readme.txt").write_text("hello")
    return server


def test_the_document_is_openapi_3_1_and_describes_every_endpoint(server: RunningQuantum) -> None:
    document = http("GET", server.url + "/api/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/api/list",
        "/api/files/{path}",
        "/api/mkdir",
        "/api/move",
        "/api/changes",
        "/api/bundle",
        "/api/chunks",
        "/api/chunks/missing",
        "/api/chunks/get",
        "/api/uploads",
        "/api/uploads/{id}",
        "/api/openapi.json",
        "/api/versions/{path}",
        "/api/restore",
        "/api/trash",
        "/api/trash/restore",
        "/api/history",
    }
    assert set(document["paths"]["/api/files/{path}"]) >= {"get", "head", "put", "delete"}


def operations_of(server: RunningQuantum) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_api_conforms_to_its_openapi_document(server: RunningQuantum) -> None:
    operations = operations_of(server)
    assert {op.label for op in operations} >= {
        "GET /api/list",
        "GET /api/files/{path}",
        "PUT /api/files/{path}",
        "DELETE /api/files/{path}",
        "POST /api/mkdir",
        "POST /api/move",
        "GET /api/changes",
        "POST /api/bundle",
        "POST /api/chunks",
        "POST /api/chunks/missing",
        "POST /api/chunks/get",
        "POST /api/uploads",
        "PATCH /api/uploads/{id}",
        "DELETE /api/uploads/{id}",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=server.url,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=10,
            )

        conforms()
    assert http("GET", server.url + "/api/list").status == 200
