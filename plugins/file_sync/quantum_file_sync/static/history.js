// File history in the page (docs/history.md): the versions of one file and the trash, each a
// side panel listing what the server keeps, newest first, with "Load more" for the next page.
// Both follow the live feed: a change or a `Purge` of what they show makes them reload.

import { encodePath, tokenStore } from "./api.js";
import { askText, confirmAction } from "./dialogs.js";
import { formatSize } from "./format.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 50;
const REFRESH_DELAY_MS = 100; // coalesce a burst of operations into one reload
const FILTER_DELAY_MS = 250; // typing in the trash filter
const SHOWN_CONFLICTS = 5;

const moment = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timeElement(rfc3339, prefix = "") {
  const time = element("time");
  const date = new Date(rfc3339);
  if (rfc3339 && !Number.isNaN(date.getTime())) {
    time.dateTime = rfc3339;
    time.textContent = prefix + moment.format(date);
  }
  return time;
}

function button(label, onClick, className = "small") {
  const node = element("button", className, label);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

function within(path, folder) {
  return path === folder || path.startsWith(`${folder}/`);
}

/** The operation's kind and body: `{Update: {...}}` → ["Update", {...}] (null: not an object). */
function kindOf(operation) {
  if (!operation || typeof operation !== "object") return [null, null];
  const [kind] = Object.keys(operation);
  return [kind ?? null, operation[kind] ?? null];
}

/** The paths an operation touches (the metadata path, a move's source, a purge's paths). */
function pathsOf(kind, body) {
  if (!body) return [];
  if (kind === "Purge") return Array.isArray(body.paths) ? body.paths : [];
  const paths = [body.metadata?.path ?? body.path];
  if (kind === "Move") paths.push(body.from);
  return paths.filter((path) => typeof path === "string");
}

/**
 * A side panel with a paged list: subclasses say how to fetch a page (`fetchPage(cursor)` →
 * `{items, next}`) and draw an item (`renderItem`); this keeps the pages, the status line, the
 * "Load more" button, focus across redraws, and drops answers a newer reload has overtaken.
 */
class PagedPanel {
  #generation = 0;
  #refreshTimer = null;

  constructor(prefix, { api, clientId, withAuth, reportError }) {
    this.api = api;
    this.clientId = clientId;
    this.section = $(`${prefix}-section`);
    this.heading = $(`${prefix}-heading`);
    this.list = $(`${prefix}-list`);
    this.status = $(`${prefix}-status`);
    this.more = $(`${prefix}-more`);
    this.withAuth = withAuth;
    this.reportError = reportError;
    this.items = [];
    this.next = null;
    this.more.addEventListener("click", () => this.loadMore());
    this.section.querySelector("[data-close]").addEventListener("click", () => this.close());
  }

  get isOpen() {
    return !this.section.hidden;
  }

  show() {
    this.section.hidden = false;
    this.section.scrollIntoView({ block: "nearest" });
    this.heading.focus();
    return this.refresh();
  }

  close() {
    this.section.hidden = true;
    this.#generation += 1; // answers still on their way are dropped
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
  }

  scheduleRefresh() {
    if (!this.isOpen) return;
    this.#refreshTimer ??= setTimeout(() => {
      this.#refreshTimer = null;
      this.refresh();
    }, REFRESH_DELAY_MS);
  }

  /** Load the first page again (what was shown stays until the answer is in). */
  refresh() {
    return this.#load(null, []);
  }

  loadMore() {
    if (this.next) return this.#load(this.next, this.items);
    return Promise.resolve();
  }

  async #load(cursor, before) {
    const generation = ++this.#generation;
    this.section.setAttribute("aria-busy", "true");
    this.more.disabled = true;
    try {
      const page = await this.withAuth(() => this.fetchPage(cursor));
      if (generation !== this.#generation) return;
      this.items = [...before, ...page.items];
      this.next = page.next ?? null;
      this.problem = null;
    } catch (error) {
      if (generation !== this.#generation) return;
      this.problem = this.describeError(error);
      if (cursor === null) this.items = [];
    } finally {
      if (generation === this.#generation) {
        this.section.removeAttribute("aria-busy");
        this.more.disabled = false;
      }
    }
    this.render();
  }

  describeError(error) {
    if (error?.code === "history_disabled") return "History is turned off on this server.";
    return `Could not load: ${error?.message ?? error}`;
  }

  render() {
    const focused = document.activeElement;
    const focusedItem = this.list.contains(focused) ? focused.closest("[data-id]") : null;
    const focusedLabel = focused?.textContent;
    this.list.replaceChildren(...this.items.map((item) => this.#item(item)));
    this.status.textContent = this.problem ?? (this.items.length ? "" : this.emptyText());
    this.status.hidden = !this.status.textContent;
    this.more.hidden = !this.next;
    this.renderExtra();
    if (focusedItem) {
      // Redrawn under the user's focus: keep it on the same button, or on the heading.
      const again = this.list.querySelector(`[data-id="${focusedItem.dataset.id}"]`);
      const same = again && [...again.querySelectorAll("button, a")].find(
        (control) => control.textContent === focusedLabel,
      );
      (same ?? this.heading).focus();
    }
  }

  #item(item) {
    const row = element("li", "history-item");
    row.dataset.id = String(item.id);
    this.renderItem(row, item);
    return row;
  }

  renderExtra() {}

  /** Who did it: "You" for this tab, the client id, or where it came from. */
  who(source, origin) {
    if (source && source === this.clientId) return "by you";
    if (source) return `by ${source}`;
    return origin === "disk" ? "on the server's disk" : "by an unnamed client";
  }

  /** Run a request of an action; on an error report it and answer null. */
  async attempt(request) {
    try {
      return await this.withAuth(request);
    } catch (error) {
      this.reportError(error);
      return null;
    }
  }
}

// ---- versions of one file ----------------------------------------------------------------

class VersionList extends PagedPanel {
  constructor(options) {
    super("versions", options);
    this.path = null;
    this.current = null;
  }

  open(path) {
    this.path = path;
    this.current = undefined;
    this.items = [];
    this.next = null;
    $("versions-path").textContent = path;
    this.list.replaceChildren();
    $("versions-current").textContent = "";
    return this.show();
  }

  async fetchPage(cursor) {
    let url = `/api/versions/${encodePath(this.path)}?limit=${PAGE_SIZE}`;
    if (cursor) url += `&cursor=${encodeURIComponent(cursor)}`;
    const page = await this.api.json("GET", url);
    if (!cursor) this.current = page.current ?? null;
    return { items: page.versions ?? [], next: page.next };
  }

  describeError(error) {
    if (error?.status === 404 && error.code !== "history_disabled") {
      return "No versions of this path are kept.";
    }
    return super.describeError(error);
  }

  emptyText() {
    return "No earlier versions yet: each change through Quantum keeps the content it replaced.";
  }

  renderExtra() {
    const line = $("versions-current");
    if (this.current === undefined) return;
    if (this.current) {
      line.replaceChildren(
        `Now: ${formatSize(this.current.size)}, modified `,
        timeElement(this.current.modified),
      );
    } else {
      line.textContent = "No file is at this path now: restoring a version creates it again.";
    }
  }

  renderItem(row, version) {
    row.classList.toggle("incomplete", version.complete === false);
    const head = element("div", "history-line");
    head.append(timeElement(version.replaced), element("span", "history-size", formatSize(version.size)));
    if (version.complete === false) head.append(element("span", "badge", "incomplete"));
    const meta = [version.reason === "delete" ? "deleted" : "replaced", this.who(version.source_client, version.origin)];
    if (version.recorded_path && version.recorded_path !== version.path) {
      meta.push(`was ${version.recorded_path}`);
    }
    const buttons = element("div", "history-buttons");
    if (version.complete === false) {
      buttons.append(element("span", "muted", "Some of its content is gone: it cannot be restored."));
    } else {
      buttons.append(this.#downloadLink(version), button("Restore", () => this.#restore(version)));
    }
    row.append(head, element("div", "history-meta", meta.join(" · ")), buttons);
  }

  #downloadLink(version) {
    const link = element("a", "button small", "Download");
    const url = `/api/versions/${encodePath(this.path)}?version=${encodeURIComponent(version.id)}`;
    const name = this.path.split("/").pop();
    link.href = url;
    link.download = name;
    link.addEventListener("click", (event) => {
      // A plain link streams to disk but cannot carry the token: with one, fetch into a Blob.
      if (!tokenStore.current()) return;
      event.preventDefault();
      this.attempt(() => this.api.save(url, name));
    });
    return link;
  }

  async #restore(version) {
    const path = this.path;
    const when = moment.format(new Date(version.replaced));
    const confirmed = await confirmAction({
      title: "Restore this version?",
      message: this.current
        ? `“${path}” will be replaced for everyone by the version replaced ${when} (${formatSize(version.size)}). What is there now is kept as a version.`
        : `“${path}” will be created again from the version of ${when} (${formatSize(version.size)}).`,
      submitLabel: "Restore",
      danger: false,
    });
    if (!confirmed) return;
    const answer = await this.attempt(() =>
      this.api.json("POST", "/api/restore", { path, version: version.id }),
    );
    if (answer) this.scheduleRefresh(); // the Update arrives on /ws like any other change
  }

  onOperation(kind, body) {
    if (!this.isOpen) return;
    if (kind === "Move" && body.from && body.metadata && within(this.path, body.from)) {
      // Versions follow moves: keep showing this file under its new path.
      this.path = body.metadata.path + this.path.slice(body.from.length);
      $("versions-path").textContent = this.path;
      this.scheduleRefresh();
      return;
    }
    const touched = pathsOf(kind, body);
    if (touched.some((path) => within(this.path, path))) this.scheduleRefresh();
  }
}

// ---- trash -------------------------------------------------------------------------------

class TrashView extends PagedPanel {
  #filterTimer = null;

  constructor(options) {
    super("trash", options);
    this.checkPath = options.checkPath;
    this.conflicts = new Map(); // trash id → its last restore's conflicts (kept across reloads)
    this.usage = null;
    this.prefix = "";
    const filter = $("trash-prefix");
    const apply = () => {
      clearTimeout(this.#filterTimer);
      if (filter.value.trim() === this.prefix) return;
      this.prefix = filter.value.trim();
      this.refresh();
    };
    filter.addEventListener("input", () => {
      clearTimeout(this.#filterTimer);
      this.#filterTimer = setTimeout(apply, FILTER_DELAY_MS);
    });
    $("trash-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      apply();
    });
    $("empty-trash-button").addEventListener("click", () => this.#empty());
  }

  open() {
    return this.show();
  }

  async fetchPage(cursor) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (this.prefix) query.set("prefix", this.prefix);
    if (cursor) query.set("cursor", cursor);
    const [page, usage] = await Promise.all([
      this.api.json("GET", `/api/trash?${query}`),
      cursor ? this.usage : this.api.json("GET", "/api/history").catch(() => null),
    ]);
    this.usage = usage;
    return { items: page.items ?? [], next: page.next };
  }

  emptyText() {
    return this.prefix ? `Nothing in the trash is in or at “${this.prefix}”.` : "The trash is empty.";
  }

  renderExtra() {
    const ids = new Set(this.items.map((item) => item.id));
    for (const id of this.conflicts.keys()) if (!ids.has(id)) this.conflicts.delete(id);
    $("empty-trash-button").disabled = this.items.length === 0;
    const usage = this.usage;
    const text = $("trash-usage-text");
    const meter = $("trash-usage-meter");
    meter.hidden = !usage?.cap_bytes;
    if (!usage) {
      text.textContent = "";
      return;
    }
    const versions = usage.versions?.count ?? 0;
    const trashed = usage.trash?.count ?? 0;
    text.textContent =
      `History stores ${formatSize(usage.stored_bytes ?? 0)}` +
      (usage.cap_bytes ? ` of ${formatSize(usage.cap_bytes)} allowed` : "") +
      ` · ${versions} ${versions === 1 ? "version" : "versions"}, ${trashed} in the trash`;
    if (usage.cap_bytes) {
      meter.max = usage.cap_bytes;
      meter.value = Math.min(usage.stored_bytes ?? 0, usage.cap_bytes);
    }
  }

  renderItem(row, item) {
    const head = element("div", "history-line");
    head.append(element("span", "path", item.path));
    if (item.is_directory) head.append(element("span", "badge", "folder"));
    if (item.complete === false) head.append(element("span", "badge", "incomplete"));
    const meta = element("div", "history-meta");
    const details = [formatSize(item.size)];
    if (item.is_directory) details.push(`${item.files.toLocaleString()} ${item.files === 1 ? "file" : "files"}`);
    details.push(this.who(item.source_client, item.origin));
    meta.append(timeElement(item.deleted, "deleted "), ` · ${details.join(" · ")}`);
    row.append(head, meta);
    const conflicts = this.conflicts.get(item.id);
    const buttons = element("div", "history-buttons");
    buttons.append(button("Restore", () => this.#restore(item)));
    if (conflicts?.length) {
      row.append(this.#conflictNote(conflicts));
      buttons.append(button("Restore to…", () => this.#restoreTo(item)));
    }
    row.append(buttons);
  }

  #conflictNote(conflicts) {
    const note = element("div", "conflict");
    const lines = conflicts.slice(0, SHOWN_CONFLICTS).map((conflict) => {
      const reason =
        {
          exists: "already exists",
          is_directory: "is a folder now",
          not_a_directory: "is below a file now",
        }[conflict.code] ?? conflict.error ?? conflict.code;
      return `“${conflict.path}” ${reason}`;
    });
    if (conflicts.length > SHOWN_CONFLICTS) lines.push(`and ${conflicts.length - SHOWN_CONFLICTS} more`);
    note.textContent = `Not restored: ${lines.join("; ")}.`;
    return note;
  }

  async #restore(item, to) {
    const body = { ids: [item.id] };
    if (to) body.to = to;
    let answer;
    try {
      answer = await this.withAuth(() => this.api.json("POST", "/api/trash/restore", body));
    } catch (error) {
      if (error?.status !== 409) {
        this.reportError(error);
        return;
      }
      // A taken `to` (or a restore refused as a whole): shown on the item like a conflict.
      answer = { restored: [], conflicts: [{ id: item.id, path: to ?? item.path, code: error.code, error: error.message }] };
    }
    const conflicts = (answer?.conflicts ?? []).filter((conflict) => conflict.id === item.id);
    if (conflicts.length) this.conflicts.set(item.id, conflicts);
    else this.conflicts.delete(item.id);
    this.render();
    this.scheduleRefresh();
  }

  async #restoreTo(item) {
    const answer = await askText({
      title: "Restore to another path",
      label: `Restore “${item.path}” as`,
      value: item.path,
      submitLabel: "Restore",
      validate: (value) => this.checkPath(value)[1],
    });
    if (answer === null) return;
    await this.#restore(item, this.checkPath(answer)[0]);
  }

  async #empty() {
    const everything = !this.prefix;
    const confirmed = await confirmAction({
      title: everything ? "Empty the trash?" : "Empty this part of the trash?",
      message: everything
        ? "Everything in the trash will be deleted for good, for everyone. This cannot be undone."
        : `Everything in the trash in or at “${this.prefix}” will be deleted for good, for everyone. This cannot be undone.`,
      submitLabel: "Empty trash",
    });
    if (!confirmed) return;
    const body = everything ? undefined : { prefix: this.prefix };
    await this.attempt(() => this.api.json("DELETE", "/api/trash", body));
    this.refresh();
  }

  onOperation(kind, body) {
    if (!this.isOpen) return;
    if (kind === "Delete" || kind === "Purge") {
      this.scheduleRefresh(); // a new item, or items gone
      return;
    }
    // A restore shows as Creates of the item's paths: reload when one of them is listed.
    const touched = pathsOf(kind, body);
    const listed = this.items.map((item) => item.path);
    if (touched.some((path) => listed.some((folder) => within(path, folder)))) {
      this.scheduleRefresh();
    }
  }
}

// ---- both --------------------------------------------------------------------------------

export class HistoryPanels {
  /**
   * @param {object} options
   * @param {import("./api.js").Api} options.api
   * @param {(action: () => Promise<any>) => Promise<any>} options.withAuth  retries after a 401
   * @param {(error: any) => void} options.reportError
   * @param {string} options.clientId                 this tab's id ("by you")
   * @param {(value: string) => [string, string|null]} options.checkPath  a typed path → [clean, problem]
   */
  constructor(options) {
    this.versions = new VersionList(options);
    this.trash = new TrashView(options);
  }

  showVersions(path) {
    return this.versions.open(path);
  }

  showTrash() {
    return this.trash.open();
  }

  /** Every FileOperation the page applied, of any kind (unknown kinds are ignored). */
  onOperation(operation) {
    const [kind, body] = kindOf(operation);
    if (!kind || !body) return;
    this.versions.onOperation(kind, body);
    this.trash.onOperation(kind, body);
  }
}
