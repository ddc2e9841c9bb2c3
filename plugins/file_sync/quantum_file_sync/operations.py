"""File metadata, the operations and the journaled change event, with their wire form.

Wire form (DESIGN.md): ``{"Create": {"metadata": M}}``, ``{"Update": {"metadata": M}}``,
``{"Delete": {"path": P, "is_directory": bool}}``, ``{"Move": {"from": P, "metadata": M}}``,
and history's ``{"Purge": {"paths": [P...], "versions": N, "trash": N}}`` (docs/history.md),
which changes no live file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class FileMetadata:
    path: str
    size: int
    hash: str | None
    modified: str
    is_directory: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "hash": self.hash,
            "modified": self.modified,
            "is_directory": self.is_directory,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileMetadata:
        return cls(
            path=data["path"],
            size=int(data["size"]),
            hash=data["hash"],
            modified=data["modified"],
            is_directory=bool(data["is_directory"]),
        )


@dataclass(frozen=True, slots=True)
class Create:
    metadata: FileMetadata
    kind = "Create"

    def to_json(self) -> dict[str, Any]:
        return {"Create": {"metadata": self.metadata.to_json()}}


@dataclass(frozen=True, slots=True)
class Update:
    metadata: FileMetadata
    kind = "Update"

    def to_json(self) -> dict[str, Any]:
        return {"Update": {"metadata": self.metadata.to_json()}}


@dataclass(frozen=True, slots=True)
class Delete:
    path: str
    is_directory: bool
    kind = "Delete"

    def to_json(self) -> dict[str, Any]:
        return {"Delete": {"path": self.path, "is_directory": self.is_directory}}


@dataclass(frozen=True, slots=True)
class Move:
    from_path: str
    metadata: FileMetadata
    kind = "Move"

    def to_json(self) -> dict[str, Any]:
        return {"Move": {"from": self.from_path, "metadata": self.metadata.to_json()}}


@dataclass(frozen=True, slots=True)
class Purge:
    """Versions or trash items were dropped (retention or on request); no live file changed."""

    paths: tuple[str, ...]
    versions: int
    trash: int
    kind = "Purge"

    def to_json(self) -> dict[str, Any]:
        body = {"paths": list(self.paths), "versions": self.versions, "trash": self.trash}
        return {"Purge": body}


FileChange: TypeAlias = Create | Update | Delete | Move
"""An operation that changes live files."""
Operation: TypeAlias = Create | Update | Delete | Move | Purge


def operation_from_json(data: dict[str, Any]) -> Operation:
    """Inverse of ``Operation.to_json``; raises ``KeyError``/``ValueError`` on a bad shape."""
    if len(data) != 1:
        raise ValueError("an operation has exactly one key")
    ((kind, body),) = data.items()
    if kind == "Create":
        return Create(FileMetadata.from_json(body["metadata"]))
    if kind == "Update":
        return Update(FileMetadata.from_json(body["metadata"]))
    if kind == "Delete":
        return Delete(path=body["path"], is_directory=bool(body["is_directory"]))
    if kind == "Move":
        return Move(from_path=body["from"], metadata=FileMetadata.from_json(body["metadata"]))
    if kind == "Purge":
        paths = body["paths"]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError("Purge paths must be a list of strings")
        return Purge(tuple(paths), int(body["versions"]), int(body["trash"]))
    raise ValueError(f"unknown operation {kind!r}")


def operation_paths(operation: Operation) -> tuple[str, ...]:
    """Every path an operation touches (for pattern filtering)."""
    if isinstance(operation, Delete):
        return (operation.path,)
    if isinstance(operation, Move):
        return (operation.from_path, operation.metadata.path)
    if isinstance(operation, Purge):
        return operation.paths
    return (operation.metadata.path,)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A committed change: what happened, who did it, and where it sits in the journal."""

    operation: Operation
    source_client: str | None
    epoch: str
    seq: int
    op_id: str
    frame: str = field(default="", compare=False)
    """The ``FileOperation`` message serialised once, shared by every recipient."""

    def __post_init__(self) -> None:
        if not self.frame:
            object.__setattr__(self, "frame", json.dumps(self.to_message(), separators=(",", ":")))

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "FileOperation",
            "operation": self.operation.to_json(),
            "source_client": self.source_client,
            "seq": self.seq,
            "epoch": self.epoch,
            "op_id": self.op_id,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ChangeEvent:
        return cls(
            operation=operation_from_json(message["operation"]),
            source_client=message.get("source_client"),
            epoch=message["epoch"],
            seq=int(message["seq"]),
            op_id=message["op_id"],
        )
