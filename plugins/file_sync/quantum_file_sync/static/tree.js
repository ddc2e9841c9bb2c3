// The known state of the served folder: metadata by path, plus a child index for rendering.
// Fed by /api/list and kept current by FileOperation messages (Create/Update/Delete/Move;
// other kinds, such as history's Purge, change no live file and are ignored).

export function parentOf(path) {
  const cut = path.lastIndexOf("/");
  return cut === -1 ? "" : path.slice(0, cut);
}

export function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

function byFolderThenName(a, b) {
  if (a.is_directory !== b.is_directory) return a.is_directory ? -1 : 1;
  return collator.compare(baseName(a.path), baseName(b.path)) || (a.path < b.path ? -1 : 1);
}

export class FileTree {
  #entries = new Map(); // path → metadata
  #children = new Map(); // folder path ("" = root) → Set of child paths
  #sorted = new Map(); // folder path → its children's metadata in display order (a cache)

  constructor() {
    this.#children.set("", new Set());
  }

  get size() {
    return this.#entries.size;
  }

  get(path) {
    return this.#entries.get(path);
  }

  /** Replace everything with a listing. */
  reset(files) {
    this.#entries.clear();
    this.#children.clear();
    this.#sorted.clear();
    this.#children.set("", new Set());
    for (const metadata of files) this.#put(metadata);
  }

  /** Sorted metadata of the entries directly inside `folder`. */
  children(folder) {
    let sorted = this.#sorted.get(folder);
    if (!sorted) {
      const paths = this.#children.get(folder) ?? [];
      sorted = Array.from(paths, (path) => this.#entries.get(path)).sort(byFolderThenName);
      this.#sorted.set(folder, sorted);
    }
    return sorted;
  }

  /**
   * Apply a wire operation; returns what changed as `{kind, path, from?, isDirectory}`
   * (or null for a shape this page does not know).
   */
  apply(operation) {
    if (!operation || typeof operation !== "object") return null;
    if (operation.Create) return this.#upsert("Create", operation.Create.metadata);
    if (operation.Update) return this.#upsert("Update", operation.Update.metadata);
    if (operation.Delete) {
      const { path, is_directory: isDirectory } = operation.Delete;
      this.#remove(path);
      return { kind: "Delete", path, isDirectory };
    }
    if (operation.Move) {
      const { from, metadata } = operation.Move;
      this.#move(from, metadata);
      return { kind: "Move", path: metadata.path, from, isDirectory: metadata.is_directory };
    }
    return null;
  }

  #upsert(kind, metadata) {
    this.#put(metadata);
    return { kind, path: metadata.path, isDirectory: metadata.is_directory };
  }

  #put(metadata) {
    const { path } = metadata;
    if (!path) return;
    const previous = this.#entries.get(path);
    if (previous?.is_directory && !metadata.is_directory) this.#remove(path);
    this.#ensureFolder(parentOf(path));
    this.#entries.set(path, metadata);
    this.#children.get(parentOf(path)).add(path);
    this.#sorted.delete(parentOf(path));
    if (metadata.is_directory && !this.#children.has(path)) this.#children.set(path, new Set());
  }

  /** Folders implied by a path are shown even before their own metadata arrives. */
  #ensureFolder(path) {
    if (this.#children.has(path)) return;
    this.#put({ path, size: 0, hash: null, modified: null, is_directory: true });
  }

  #remove(path) {
    const kids = this.#children.get(path);
    if (kids && path !== "") {
      for (const child of Array.from(kids)) this.#remove(child);
      this.#children.delete(path);
      this.#sorted.delete(path);
    }
    this.#entries.delete(path);
    this.#children.get(parentOf(path))?.delete(path);
    this.#sorted.delete(parentOf(path));
  }

  #descendants(path) {
    const found = [];
    for (const child of this.#children.get(path) ?? []) {
      found.push(this.#entries.get(child));
      found.push(...this.#descendants(child));
    }
    return found;
  }

  #move(from, metadata) {
    const moved = this.#entries.get(from)?.is_directory ? this.#descendants(from) : [];
    this.#remove(from);
    this.#put(metadata);
    const prefix = `${from}/`;
    for (const entry of moved) {
      this.#put({ ...entry, path: `${metadata.path}/${entry.path.slice(prefix.length)}` });
    }
  }
}
