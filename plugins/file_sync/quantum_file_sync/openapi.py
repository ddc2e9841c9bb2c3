"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from quantum_file_sync import bundle, chunks
from quantum_file_sync.paths import MAX_PATH_BYTES

_REF = "#/components/schemas/"


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + schema_name}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _errors(*statuses: int, auth: bool) -> dict[str, Any]:
    descriptions = {
        400: "bad request or unsafe path (`bad_path`)",
        401: "missing or invalid bearer token",
        403: "read-only server, reserved path or refused Origin",
        404: "not found",
        405: "method not allowed",
        409: "conflict with what is on disk",
        412: "If-Match / If-None-Match precondition failed",
        413: "upload or body too large",
        416: "range not satisfiable",
    }
    chosen = [s for s in statuses if s != 401 or auth]
    return {str(status): _error(descriptions[status]) for status in chosen}


_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path", "size", "hash", "modified", "is_directory"],
    "properties": {
        "path": {"type": "string", "description": "relative to root, '/'-separated"},
        "size": {"type": "integer", "minimum": 0},
        "hash": {
            "type": ["string", "null"],
            "pattern": "^[0-9a-f]{64}$",
            "description": "SHA-256 of the content, lowercase hex; null for directories",
        },
        "modified": {"type": "string", "format": "date-time"},
        "is_directory": {"type": "boolean"},
    },
}

_OPERATION = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": [kind],
            "properties": {
                kind: {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["metadata"],
                    "properties": {"metadata": {"$ref": _REF + "Metadata"}},
                }
            },
        }
        for kind in ("Create", "Update")
    ]
    + [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["Delete"],
            "properties": {
                "Delete": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["path", "is_directory"],
                    "properties": {"path": {"type": "string"}, "is_directory": {"type": "boolean"}},
                }
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["Move"],
            "properties": {
                "Move": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["from", "metadata"],
                    "properties": {
                        "from": {"type": "string"},
                        "metadata": {"$ref": _REF + "Metadata"},
                    },
                }
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["Purge"],
            "properties": {
                "Purge": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["paths", "versions", "trash"],
                    "properties": {
                        "paths": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                        "versions": {"type": "integer", "minimum": 0},
                        "trash": {"type": "integer", "minimum": 0},
                    },
                }
            },
        },
    ]
}

_SCHEMAS: dict[str, Any] = {
    "Metadata": _METADATA,
    "Error": {
        "type": "object",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "human-readable"},
            "code": {"type": "string", "description": "stable identifier (docs/api.md)"},
        },
    },
    "Listing": {
        "type": "object",
        "additionalProperties": False,
        "required": ["epoch", "seq", "files"],
        "properties": {
            "epoch": {"type": "string"},
            "seq": {"type": "integer", "minimum": 0},
            "files": {"type": "array", "items": {"$ref": _REF + "Metadata"}},
            "next": {"type": "string", "description": "cursor of the next page"},
        },
    },
    "Operation": _OPERATION,
    "FileOperation": {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "operation", "source_client", "seq", "epoch", "op_id"],
        "properties": {
            "type": {"const": "FileOperation"},
            "operation": {"$ref": _REF + "Operation"},
            "source_client": {"type": ["string", "null"]},
            "seq": {"type": "integer", "minimum": 1},
            "epoch": {"type": "string"},
            "op_id": {"type": "string"},
        },
    },
    "Changes": {
        "type": "object",
        "additionalProperties": False,
        "required": ["epoch", "seq", "recovered", "operations"],
        "properties": {
            "epoch": {"type": "string"},
            "seq": {"type": "integer", "minimum": 0},
            "recovered": {
                "type": "boolean",
                "description": "false: the journal cannot replay from `since` in `epoch`; "
                "reconcile with a full listing",
            },
            "operations": {"type": "array", "items": {"$ref": _REF + "FileOperation"}},
        },
    },
    "MkdirRequest": {
        "type": "object",
        "required": ["path"],
        "properties": {"path": {"type": "string", "minLength": 1}},
    },
    "BundleRequest": {
        "type": "object",
        "required": ["paths"],
        "properties": {
            "paths": {
                "type": "array",
                "maxItems": bundle.MAX_PATHS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES},
                "description": "files to send, in this order (a repeated path is sent once)",
            }
        },
    },
    "MoveRequest": {
        "type": "object",
        "required": ["from", "to"],
        "properties": {
            "from": {"type": "string", "minLength": 1},
            "to": {"type": "string", "minLength": 1},
        },
    },
}


def _block_paths(*, auth: bool) -> dict[str, Any]:
    """Block transfers (docs/chunks.md): manifests, missing chunks, chunk records."""
    records = {chunks.RECORDS_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}
    hashes = {"application/json": {"schema": {"$ref": _REF + "ChunkList"}}}
    return {
        "/api/chunks/missing": {
            "post": {
                "summary": "Which of these chunks the server has nowhere",
                "description": "`path` (optional): the upload's target, cut first if needed",
                "requestBody": {"required": True, "content": hashes},
                "responses": {
                    "200": _json("MissingChunks", "the chunks to upload"),
                    **_errors(400, 401, 403, 413, auth=auth),
                },
            }
        },
        "/api/chunks": {
            "post": {
                "summary": "Upload chunk records (`HASH SIZE\\n` + bytes, repeated)",
                "requestBody": {"required": True, "content": records},
                "responses": {
                    "200": _json("StoredChunks", "every record was stored"),
                    "422": _error("a record's bytes do not match its hash (`chunk_mismatch`)"),
                    **_errors(400, 401, 403, auth=auth),
                    "415": _error("not chunk records"),
                },
            }
        },
        "/api/chunks/get": {
            "post": {
                "summary": "Download chunk records (chunks the server lacks are left out)",
                "requestBody": {"required": True, "content": hashes},
                "responses": {
                    "200": {"description": "the records, streamed", "content": records},
                    **_errors(400, 401, 403, 413, auth=auth),
                },
            }
        },
    }


_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_BLOCK_SCHEMAS: dict[str, Any] = {
    "Manifest": {
        "type": "object",
        "required": ["hash", "size", "chunks"],
        "properties": {
            "path": {"type": "string"},
            "hash": _HASH,
            "size": {"type": "integer", "minimum": 0},
            "chunks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["hash", "size"],
                    "properties": {
                        "hash": _HASH,
                        "offset": {"type": "integer", "minimum": 0},
                        "size": {"type": "integer", "minimum": 1, "maximum": chunks.MAX_CHUNK},
                    },
                },
            },
        },
    },
    "ChunkList": {
        "type": "object",
        "required": ["chunks"],
        "properties": {
            "chunks": {"type": "array", "items": _HASH, "maxItems": 10000},
            "path": {"type": "string", "description": "the upload's target (missing only)"},
        },
    },
    "MissingChunks": {
        "type": "object",
        "required": ["missing"],
        "properties": {"missing": {"type": "array", "items": _HASH}},
    },
    "StoredChunks": {
        "type": "object",
        "required": ["stored"],
        "properties": {"stored": {"type": "array", "items": _HASH}},
    },
}


def _history_paths(*, auth: bool, file_path: dict[str, Any]) -> dict[str, Any]:
    """File history (docs/history.md): versions, restores, the trash, usage."""
    page = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    version = {
        "name": "version",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1},
        "description": "a version id (from the list)",
    }
    required_version = {**version, "required": True}
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    json_body = {"application/json": {"schema": {"$ref": _REF + "TrashSelection"}}}
    history_errors = _errors(400, 401, 403, 404, 409, auth=auth)
    insufficient = {"507": _error("the disk is full")}
    return {
        "/api/versions/{path}": {
            "get": {
                "summary": "The versions of a path, newest first (or one version's bytes)",
                "parameters": [file_path, version, *page],
                "responses": {
                    "200": {
                        "description": "the list; with `version`, that version's bytes",
                        "content": {
                            "application/json": {"schema": {"$ref": _REF + "VersionList"}},
                            **octets,
                        },
                    },
                    **history_errors,
                },
            },
            "delete": {
                "summary": "Purge one version",
                "parameters": [file_path, required_version],
                "responses": {
                    "200": _json("Purged", "purged (journaled as a Purge operation)"),
                    **history_errors,
                },
            },
        },
        "/api/restore": {
            "post": {
                "summary": "Make a version the live file again (or write it at `to`)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF + "Restore"}}},
                },
                "responses": {
                    "200": _json("Restored", "restored: one Update (or Create) is journaled"),
                    **history_errors,
                    **_errors(413, auth=auth),
                    **insufficient,
                },
            }
        },
        "/api/trash": {
            "get": {
                "summary": "Deleted files and directories, newest first",
                "parameters": [
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "schema": {"type": "string"}},
                    {"name": "source_client", "in": "query", "schema": {"type": "string"}},
                    *page,
                ],
                "responses": {
                    "200": _json("TrashList", "a page of the trash"),
                    **_errors(400, 401, 403, 404, auth=auth),
                },
            },
            "delete": {
                "summary": "Empty the trash (or only the selected items)",
                "requestBody": {"required": False, "content": json_body},
                "responses": {
                    "200": _json("Purged", "purged (journaled as a Purge operation)"),
                    **_errors(400, 401, 403, 404, 413, auth=auth),
                },
            },
        },
        "/api/trash/restore": {
            "post": {
                "summary": "Put trash items back (never over an existing file)",
                "requestBody": {"required": True, "content": json_body},
                "responses": {
                    "200": _json("TrashRestored", "what was restored, and what was in the way"),
                    **_errors(400, 401, 403, 404, 413, auth=auth),
                    **insufficient,
                },
            }
        },
        "/api/history": {
            "get": {
                "summary": "How much history and trash hold, and the cap",
                "responses": {
                    "200": _json("HistoryUsage", "usage"),
                    **_errors(401, 403, 404, auth=auth),
                },
            }
        },
    }


_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_HISTORY_SCHEMAS: dict[str, Any] = {
    "Version": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "path",
            "recorded_path",
            "hash",
            "size",
            "modified",
            "replaced",
            "reason",
            "source_client",
            "origin",
            "complete",
        ],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "path": {"type": "string"},
            "recorded_path": {"type": "string"},
            "hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            "size": _COUNT,
            "modified": _TIME,
            "replaced": _TIME,
            "reason": {"enum": ["update", "delete"]},
            "source_client": _NULLABLE_STRING,
            "origin": {"enum": ["api", "disk"]},
            "complete": {"type": "boolean"},
        },
    },
    "VersionList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["path", "current", "versions", "next"],
        "properties": {
            "path": {"type": "string"},
            "current": {"oneOf": [{"type": "null"}, {"$ref": _REF + "Metadata"}]},
            "versions": {"type": "array", "items": {"$ref": _REF + "Version"}, "maxItems": 100},
            "next": _NULLABLE_STRING,
        },
    },
    "Restore": {
        "type": "object",
        "required": ["path", "version"],
        "properties": {
            "path": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "to": {"type": "string", "description": "write it here instead (never overwrites)"},
        },
    },
    "Restored": {
        "type": "object",
        "required": ["metadata", "restored_from"],
        "properties": {
            "metadata": {"$ref": _REF + "Metadata"},
            "restored_from": {"type": "integer"},
        },
    },
    "TrashItem": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "path",
            "is_directory",
            "files",
            "size",
            "hash",
            "deleted",
            "source_client",
            "origin",
            "complete",
        ],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "path": {"type": "string"},
            "is_directory": {"type": "boolean"},
            "files": _COUNT,
            "size": _COUNT,
            "hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            "deleted": _TIME,
            "source_client": _NULLABLE_STRING,
            "origin": {"enum": ["api", "disk"]},
            "complete": {"type": "boolean"},
        },
    },
    "TrashList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": _REF + "TrashItem"}, "maxItems": 100},
            "next": _NULLABLE_STRING,
        },
    },
    "TrashSelection": {
        "type": "object",
        "description": "`ids`, or `since` with optional `prefix` / `source_client`",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "since": {"type": ["string", "number"], "description": "RFC 3339 or Unix seconds"},
            "prefix": {"type": "string"},
            "source_client": {"type": "string"},
            "to": {"type": "string", "description": "restore the one item given here instead"},
        },
    },
    "TrashRestored": {
        "type": "object",
        "required": ["restored", "conflicts"],
        "properties": {
            "restored": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "path"],
                    "properties": {"id": {"type": "integer"}, "path": {"type": "string"}},
                },
            },
            "conflicts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "path", "code", "error"],
                    "properties": {
                        "id": {"type": "integer"},
                        "path": {"type": "string"},
                        "code": {"type": "string"},
                        "error": {"type": "string"},
                    },
                },
            },
        },
    },
    "Purged": {
        "type": "object",
        "required": ["purged"],
        "properties": {"purged": _COUNT},
    },
    "HistoryUsage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["versions", "trash", "stored_bytes", "cap_bytes", "pending"],
        "properties": {
            "versions": {"$ref": _REF + "Usage"},
            "trash": {"$ref": _REF + "Usage"},
            "stored_bytes": _COUNT,
            "cap_bytes": _COUNT,
            "pending": _COUNT,
        },
    },
    "Usage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["count", "bytes"],
        "properties": {"count": _COUNT, "bytes": _COUNT},
    },
}


def _upload_paths(*, auth: bool) -> dict[str, Any]:
    """Resumable uploads (quantum_file_sync.resumable): the IETF draft and tus 1.0."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    problem_or_error = {
        "application/json": {"schema": {"$ref": _REF + "Error"}},
        "application/problem+json": {"schema": {"$ref": _REF + "UploadProblem"}},
    }

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": problem_or_error}

    state = {
        name: {"schema": {"type": "string"}, "description": description}
        for name, description in (
            ("Upload-Offset", "bytes received (durably) so far"),
            ("Upload-Complete", "?1 once complete, else ?0"),
            ("Upload-Limit", "max-size=N, max-age=SECONDS"),
        )
    }
    common = {
        **_errors(400, 401, 404, auth=auth),
        "412": _error("unsupported Tus-Resumable version (with Tus-Version)"),
        "423": _error("another server is receiving this upload (`upload_busy`)"),
    }
    done = {
        "200": _json("Metadata", "complete: the file replaced the one at the target"),
        "201": _json("Metadata", "complete: the file was created at the target"),
        "204": {"description": "appended (or complete, for tus)", "headers": state},
    }
    writes = {
        "403": _error("read-only server, or a reserved target"),
        "409": error("wrong Upload-Offset (`offset_mismatch`, expected one in Upload-Offset)"),
        "412": _error("If-Match / If-None-Match given at creation failed at commit"),
        "413": _error("over max_upload_size (with Upload-Limit)"),
        "422": _error("the upload's SHA-256 is not the one announced (`hash_mismatch`)"),
        "507": _error("the server's disk is full (what was received durably is kept)"),
        "400": error("bad header, path or length (`inconsistent_length`)"),
    }
    upload_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "the upload's id (from Location)",
    }
    tus = _header("Tus-Resumable", "1.0.0 for tus requests")
    return {
        "/api/uploads": {
            "post": {
                "summary": "Create a resumable upload for the file at `path` (IETF draft / tus)",
                "description": "IETF: `Upload-Complete` (and, to get a 104 with the Location "
                "first, `Upload-Draft-Interop-Version: 9`); tus: `Tus-Resumable`, "
                "`Upload-Length`, `Upload-Metadata` (path, filename, sha256). See docs/api.md.",
                "parameters": [
                    {"name": "path", "in": "query", "schema": {"type": "string"}},
                    tus,
                    _header("Upload-Complete", "?0 or ?1 (IETF draft)"),
                    _header("Upload-Length", "the whole upload's size"),
                    _header("Upload-Metadata", "tus: key base64, … (path, filename, sha256)"),
                    _header("Repr-Digest", "sha-256=:BASE64: checked before the commit"),
                    _header("If-Match", '"<sha256>": checked at commit'),
                    _header("If-None-Match", "*: checked at commit"),
                    _header("X-Quantum-Client", "becomes `source_client` of the broadcast"),
                ],
                "requestBody": {"required": False, "content": {"application/octet-stream": binary}},
                "responses": {
                    **done,
                    "201": {
                        "description": "created (Location), or complete at once",
                        "headers": {"Location": {"schema": {"type": "string"}}, **state},
                        "content": {"application/json": {"schema": {"$ref": _REF + "Metadata"}}},
                    },
                    **common,
                    **writes,
                },
            },
            "options": {
                "summary": "tus discovery (Tus-Version, Tus-Extension, Tus-Max-Size, …)",
                "security": [],
                "responses": {"204": {"description": "the capabilities, in headers"}},
            },
        },
        "/api/uploads/{id}": {
            "parameters": [upload_id],
            "head": {
                "summary": "The upload's offset, completeness, length and limits",
                "parameters": [tus],
                "responses": {"204": {"description": "its state", "headers": state}, **common},
            },
            "get": {
                "summary": "The same as HEAD (the draft allows GET for offset retrieval)",
                "parameters": [tus],
                "responses": {"204": {"description": "its state", "headers": state}, **common},
            },
            "patch": {
                "summary": "Append at `Upload-Offset` (completes with `Upload-Complete: ?1`, or "
                "for tus when the length is reached)",
                "parameters": [
                    tus,
                    _header("Upload-Offset", "where the body goes: the current offset"),
                    _header("Upload-Complete", "?1: this body ends the upload (IETF draft)"),
                    _header("Upload-Checksum", "tus: ALGORITHM BASE64 of this body"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/partial-upload": binary,
                        "application/offset+octet-stream": binary,
                    },
                },
                "responses": {
                    **done,
                    **common,
                    **writes,
                    "415": _error("not application/partial-upload nor offset+octet-stream"),
                    "460": _error("tus Upload-Checksum mismatch: nothing of the body was kept"),
                },
            },
            "delete": {
                "summary": "Cancel the upload",
                "parameters": [tus],
                "responses": {
                    "204": {"description": "cancelled"},
                    **common,
                    "403": _error("read-only server"),
                },
            },
        },
    }


_UPLOAD_SCHEMAS: dict[str, Any] = {
    "UploadProblem": {
        "type": "object",
        "required": ["type", "title", "error", "code"],
        "properties": {
            "type": {"type": "string", "description": "the draft's problem type URI"},
            "title": {"type": "string"},
            "error": {"type": "string"},
            "code": {"type": "string"},
            "expected-offset": {"type": "integer", "minimum": 0},
            "provided-offset": {"type": "integer", "minimum": 0},
        },
    },
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


def document(*, auth: bool, version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI document (``auth`` adds the bearer security requirement)."""
    client = _header("X-Quantum-Client", "client id; becomes `source_client` of the broadcast")
    if_match = _header("If-Match", '"<sha256>" (or *): only change the file in that version')
    file_path = {
        "name": "path",
        "in": "path",
        "required": True,
        "description": "file path relative to root (percent-encode '/' or send it as is)",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES},
    }
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    etag = {"ETag": {"schema": {"type": "string"}, "description": '"<sha256>"'}}
    content = {"description": "the file's content", "headers": etag, "content": octets}
    binary = {"type": "string", "format": "binary"}
    read_errors = _errors(400, 401, 403, 404, 409, auth=auth)
    get_file = {
        "summary": "Download a file, or its manifest (`?manifest=true` or `Accept: "
        + chunks.MANIFEST_MEDIA_TYPE
        + "`)",
        "parameters": [
            {
                "name": "manifest",
                "in": "query",
                "schema": {"type": "boolean", "default": False},
                "description": "answer the file's manifest (chunk list) instead of its bytes",
            },
            _header("Accept", chunks.MANIFEST_MEDIA_TYPE + ": the manifest"),
            _header("Range", "one byte range, e.g. bytes=0-1023"),
            _header("If-None-Match", '"<sha256>": 304 when unchanged'),
            _header("If-Range", '"<sha256>": honour Range only for that version'),
        ],
        "responses": {
            "200": {
                **content,
                "content": {
                    **octets,
                    chunks.MANIFEST_MEDIA_TYPE: {"schema": {"$ref": _REF + "Manifest"}},
                },
            },
            "206": {**content, "description": "the requested range"},
            "304": {"description": "not modified"},
            **read_errors,
            **_errors(416, auth=auth),
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Quantum file_sync API",
            "version": version,
            "description": "A folder as a real-time synchronised file service. Changes are "
            "also pushed over the WebSocket at /ws (same FileOperation messages as "
            "/api/changes).",
        },
        "paths": {
            "/api/list": {
                "get": {
                    "summary": "List a directory (recursively by default)",
                    "parameters": [
                        {
                            "name": "path",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "directory; empty or absent = root",
                        },
                        {
                            "name": "recursive",
                            "in": "query",
                            "schema": {"type": "boolean", "default": True},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100000},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "`next` of the previous page",
                        },
                    ],
                    "responses": {"200": _json("Listing", "the entries"), **read_errors},
                }
            },
            "/api/files/{path}": {
                "parameters": [file_path],
                "get": get_file,
                "head": {**get_file, "summary": "Headers of a download (ETag, size)"},
                "put": {
                    "summary": "Upload (create or replace) a file",
                    "parameters": [
                        client,
                        if_match,
                        _header("If-None-Match", "*: only create, never replace"),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            chunks.MANIFEST_MEDIA_TYPE: {
                                "schema": {"$ref": _REF + "Manifest"},
                            },
                        },
                    },
                    "responses": {
                        "200": _json("Metadata", "replaced"),
                        "201": _json("Metadata", "created"),
                        **_errors(400, 401, 403, 409, 412, 413, auth=auth),
                        "422": _error("a manifest whose chunks do not hash to its `hash`"),
                        "507": _error("the server's disk is full (the old version is kept)"),
                    },
                },
                "delete": {
                    "summary": "Delete a file, or a directory with its contents",
                    "parameters": [
                        client,
                        if_match,
                        {
                            "name": "recursive",
                            "in": "query",
                            "schema": {"type": "boolean", "default": True},
                            "description": "false: delete a directory only when it is empty "
                            "(409 `not_empty` otherwise)",
                        },
                    ],
                    "responses": {
                        "204": {"description": "deleted"},
                        **_errors(400, 401, 403, 404, 409, 412, auth=auth),
                    },
                },
            },
            "/api/mkdir": {
                "post": {
                    "summary": "Create a directory (and missing parents)",
                    "parameters": [client],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": _REF + "MkdirRequest"}}
                        },
                    },
                    "responses": {
                        "200": _json("Metadata", "already existed"),
                        "201": _json("Metadata", "created"),
                        **_errors(400, 401, 403, 409, 413, auth=auth),
                    },
                }
            },
            "/api/move": {
                "post": {
                    "summary": "Move or rename a file or directory (never replaces)",
                    "parameters": [client],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF + "MoveRequest"}}},
                    },
                    "responses": {
                        "200": _json("Metadata", "moved; metadata at the new path"),
                        **_errors(400, 401, 403, 404, 409, 413, auth=auth),
                    },
                }
            },
            "/api/bundle": {
                "post": {
                    "summary": "Download many files in one streamed response",
                    "description": "Each file is a JSON header line "
                    '`{"path", "size", "hash"}` followed by exactly `size` bytes; a file that '
                    'is not sent is a line `{"path", "error", "message"}`; the last line is '
                    '`{"end": true, "files", "errors"}`. See docs/api.md.',
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": _REF + "BundleRequest"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the records, streamed",
                            "content": {bundle.MEDIA_TYPE: {"schema": binary}},
                        },
                        **_errors(400, 401, 403, 413, auth=auth),
                    },
                }
            },
            "/api/changes": {
                "get": {
                    "summary": "Changes after `since` in `epoch` (HTTP form of the WS catch-up)",
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {"name": "epoch", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("Changes", "the missed operations, in order"),
                        **_errors(400, 401, 403, auth=auth),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {**_SCHEMAS, **_BLOCK_SCHEMAS, **_UPLOAD_SCHEMAS, **_HISTORY_SCHEMAS}
        },
    }
    doc["paths"].update(_block_paths(auth=auth))
    doc["paths"].update(_upload_paths(auth=auth))
    doc["paths"].update(_history_paths(auth=auth, file_path=file_path))
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
