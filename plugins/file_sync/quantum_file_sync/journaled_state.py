"""The journaled state in Redis: the tree as the journal describes it (path → index ``Entry``).

With the Redis broker every commit script also applies its change to this state, so it is always
exactly what the journal has announced, whichever node committed. A node that gains the
disk-watch lease makes it its index before the watcher's rescan: the rescan then journals exactly
what changed on disk while nobody watched — also while every node was stopped.

Keys under ``key_prefix``:

- ``state``       hash: path → entry (``[is_dir, dev, ino, size, mtime_ns, hash]`` as JSON, with
  ``dev`` 0 for root's own filesystem: each machine mounting a shared folder numbers it its own
  way, while the inode numbers are the file server's);
- ``state:tree``  the same paths in a sorted set, all of score 0, so a subtree is one
  lexicographic range (``[P/`` … ``(P0``) for the deletes and moves of directories;
- ``state:seed``  ``ready`` once the state describes the whole tree, ``seeding:<token>`` while the
  lease holder fills it from its index (first start, or a Redis that lost its data);
- ``state:dirty`` paths committed while a seed runs: the seed must not overwrite them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from redis.asyncio import Redis

from quantum_file_sync.index import Entry, EntryLookup
from quantum_file_sync.metadata import StatKey
from quantum_file_sync.operations import Delete, Move, Operation, Purge
from quantum_file_sync.paths import PathError, validate

READY = b"ready"
_CHUNK = 1000
_COMPACT = (",", ":")

# Lua helpers prepended to the commit script (changelog_redis.py), which calls
# apply_change(state, tree, seed, dirty, change, path, from, entry) after its XADD.
# A directory's entry starts with '[1,': only a put of a non-directory over a directory removes
# the subtree, as Index.put does.
STATE_FUNCTIONS = r"""
local function remove_tree(state, tree, path)
  local low, high = '[' .. path .. '/', '(' .. path .. '0'
  local below = redis.call('ZRANGEBYLEX', tree, low, high)
  for first = 1, #below, 500 do
    redis.call('HDEL', state, unpack(below, first, math.min(first + 499, #below)))
  end
  redis.call('ZREMRANGEBYLEX', tree, low, high)
  redis.call('HDEL', state, path)
  redis.call('ZREM', tree, path)
end

local function put(state, tree, path, entry)
  local old = redis.call('HGET', state, path)
  if old and string.sub(old, 1, 3) == '[1,' and string.sub(entry, 1, 3) ~= '[1,' then
    remove_tree(state, tree, path)
  end
  redis.call('HSET', state, path, entry)
  redis.call('ZADD', tree, 0, path)
end

local function move_tree(state, tree, source, target)
  local paths = redis.call('ZRANGEBYLEX', tree, '[' .. source .. '/', '(' .. source .. '0')
  if redis.call('HEXISTS', state, source) == 1 then
    table.insert(paths, 1, source)
  end
  local entries = {}
  for i = 1, #paths do
    entries[i] = redis.call('HGET', state, paths[i])
  end
  remove_tree(state, tree, source)
  remove_tree(state, tree, target)
  for i = 1, #paths do
    if entries[i] then
      local moved = target .. string.sub(paths[i], #source + 1)
      redis.call('HSET', state, moved, entries[i])
      redis.call('ZADD', tree, 0, moved)
    end
  end
end

local function apply_change(state, tree, seed, dirty, change, path, from, entry)
  if change == '' then
    return
  end
  local seeding = redis.call('GET', seed)
  if seeding and seeding ~= 'ready' then
    redis.call('SADD', dirty, path)
    if from ~= '' then
      redis.call('SADD', dirty, from)
    end
  end
  if change == 'remove' then
    remove_tree(state, tree, path)
    return
  end
  if change == 'move' then
    move_tree(state, tree, from, path)
  end
  if entry ~= '' then
    put(state, tree, path, entry)
  end
end
"""

# KEYS: state, tree, seed, dirty.  ARGV: token.
_BEGIN_SEED = """
redis.call('SET', KEYS[3], 'seeding:' .. ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
"""

# KEYS: state, tree, seed, dirty.  ARGV: token, then path, entry pairs.
_SEED_CHUNK = """
if redis.call('GET', KEYS[3]) ~= 'seeding:' .. ARGV[1] then
  return 0
end
local check = redis.call('SCARD', KEYS[4]) > 0
local function committed_meanwhile(path)
  if redis.call('SISMEMBER', KEYS[4], path) == 1 then
    return true
  end
  local at = string.find(path, '/', 1, true)
  while at do
    if redis.call('SISMEMBER', KEYS[4], string.sub(path, 1, at - 1)) == 1 then
      return true
    end
    at = string.find(path, '/', at + 1, true)
  end
  return false
end
for i = 2, #ARGV, 2 do
  if not (check and committed_meanwhile(ARGV[i])) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
  end
end
return 1
"""

# KEYS: state, tree, seed, dirty.  ARGV: token.
_FINISH_SEED = """
if redis.call('GET', KEYS[3]) ~= 'seeding:' .. ARGV[1] then
  return 0
end
redis.call('SET', KEYS[3], 'ready')
redis.call('DEL', KEYS[4])
return 1
"""


ROOT_DEVICE = 0
"""``dev`` as stored for an entry on root's own filesystem."""


def encode_entry(entry: Entry, root_dev: int = ROOT_DEVICE) -> str:
    key = entry.key
    dev = ROOT_DEVICE if key.dev == root_dev else key.dev
    row = [1 if entry.is_dir else 0, dev, key.ino, key.size, key.mtime_ns, entry.hash]
    return json.dumps(row, separators=_COMPACT)


def decode_entry(raw: bytes | str, root_dev: int = ROOT_DEVICE) -> Entry:
    is_dir, dev, ino, size, mtime_ns, digest = json.loads(raw)
    if digest is not None and not isinstance(digest, str):
        raise ValueError("hash must be a string")
    dev = root_dev if dev == ROOT_DEVICE else int(dev)
    return Entry(bool(is_dir), StatKey(dev, int(ino), int(size), int(mtime_ns)), digest)


class JournaledState:
    """Loading and seeding the state kept under ``key_prefix`` (the commit script updates it)."""

    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self.root_dev = ROOT_DEVICE
        """This node's device number of root (``os.stat(root).st_dev``)."""
        self.keys = [
            key_prefix + "state",
            key_prefix + "state:tree",
            key_prefix + "state:seed",
            key_prefix + "state:dirty",
        ]
        self._begin_seed = redis.register_script(_BEGIN_SEED)
        self._seed_chunk = redis.register_script(_SEED_CHUNK)
        self._finish_seed = redis.register_script(_FINISH_SEED)

    def change_args(self, operation: Operation, lookup: EntryLookup | None) -> list[str]:
        """The commit script's ``change, path, from, entry`` arguments for ``operation``.

        The entry is the committing node's index entry, which it updated just before
        committing. Without a lookup (a bare change log) the state is left alone."""
        if lookup is None or isinstance(operation, Purge):
            return ["", "", "", ""]
        if isinstance(operation, Delete):
            return ["remove", operation.path, "", ""]
        path = operation.metadata.path
        entry = lookup(path)
        encoded = encode_entry(entry, self.root_dev) if entry is not None else ""
        if isinstance(operation, Move):
            return ["move", path, operation.from_path, encoded]
        return ["put", path, "", encoded]

    async def ready(self) -> bool:
        return bool(await self._redis.get(self.keys[2]) == READY)

    async def load(self) -> list[tuple[str, Entry]] | None:
        """Every journaled entry, or ``None`` when the state was never seeded (or got lost).

        Read in pages (``HSCAN``), so not one consistent snapshot: a change committed meanwhile
        may show either way, and the caller folds such changes in again afterwards."""
        if not await self.ready():
            return None
        entries: list[tuple[str, Entry]] = []
        raw_entries: Any = self._redis.hscan_iter(self.keys[0], count=_CHUNK)
        async for raw_path, raw_entry in raw_entries:
            try:
                # Like a snapshot file, the state is only data: never trust it to stay under root.
                rel = validate(raw_path.decode())
                entries.append((rel, decode_entry(raw_entry, self.root_dev)))
            except (PathError, ValueError, TypeError, UnicodeDecodeError):
                continue
        return entries if await self.ready() else None

    async def seed(self, entries: Iterable[tuple[str, Entry]]) -> bool:
        """Make ``entries`` (the lease holder's index) the state, without overwriting changes
        committed meanwhile; ``False`` when another seed took over."""
        token = uuid.uuid4().hex
        await self._begin_seed(keys=self.keys, args=[token])
        for chunk in _chunks(entries, _CHUNK):
            pairs = ((rel, encode_entry(entry, self.root_dev)) for rel, entry in chunk)
            args = [token, *(value for pair in pairs for value in pair)]
            if not await self._seed_chunk(keys=self.keys, args=args):
                return False
        return bool(await self._finish_seed(keys=self.keys, args=[token]))


def _chunks(items: Iterable[tuple[str, Entry]], size: int) -> Iterator[list[tuple[str, Entry]]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
