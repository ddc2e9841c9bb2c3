// The file browser page: a live tree of the served folder (listing + /ws FileOperations with
// catch-up), uploads, downloads, rename/move, delete, new folder, activity and status.

import { Api, ApiError, AuthRequired, tokenStore } from "./api.js";
import { ActivityFeed } from "./activity.js";
import { askText, askToken, confirmAction } from "./dialogs.js";
import { installDropZone } from "./dropzone.js";
import { formatModified, formatSize } from "./format.js";
import { HistoryPanels } from "./history.js";
import { LiveConnection } from "./live.js";
import { ResumableUploads } from "./resumable.js";
import { Transfers } from "./transfers.js";
import { FileTree, baseName, parentOf } from "./tree.js";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const EXPANDED_KEY = "quantum.expanded";
const AUTO_EXPAND_LIMIT = 200; // a first visit to a small tree shows every folder open
const RENDER_DELAY_MS = 25; // coalesce bursts of operations (catch-up) into one render

function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(4)); // randomUUID needs a secure context
  return `browser-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function joinPath(folder, name) {
  return folder ? `${folder}/${name}` : name;
}

/** Trim and normalise a user-typed relative path; returns [path, problem]. */
function cleanPath(value) {
  const parts = value
    .trim()
    .split("/")
    .filter((part) => part !== "");
  if (parts.length === 0) return ["", "Enter a name."];
  if (parts.some((part) => part === "." || part === "..")) {
    return ["", "“.” and “..” are not allowed in a path."];
  }
  if (parts[0].startsWith(".quantum")) return ["", "Names starting with .quantum are reserved."];
  return [parts.join("/"), null];
}

const clientId = newClientId();
const api = new Api(clientId);
const tree = new FileTree();

// ---- view state --------------------------------------------------------------------------

const view = {
  selected: null, // path of the selected row (also the roving tab stop)
  pendingSelect: null, // a path we created/moved and want selected once its operation arrives
  expanded: new Set(),
  expandedRestored: false,
  listed: false,
};

function restoreExpanded() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(EXPANDED_KEY) ?? "null");
    if (Array.isArray(saved)) {
      view.expanded = new Set(saved);
      view.expandedRestored = true;
    }
  } catch {
    // Nothing saved (or storage disabled).
  }
}

function saveExpanded() {
  try {
    sessionStorage.setItem(EXPANDED_KEY, JSON.stringify([...view.expanded]));
  } catch {
    // Storage disabled: expansion is kept for this page only.
  }
}

function expandTo(folder) {
  for (let path = folder; path; path = parentOf(path)) view.expanded.add(path);
  saveExpanded();
}

function renamePrefixed(set, from, to) {
  for (const path of [...set]) {
    if (path === from || path.startsWith(`${from}/`)) {
      set.delete(path);
      if (to !== null) set.add(to + path.slice(from.length));
    }
  }
}

// ---- sync: listing + live operations -----------------------------------------------------

const sync = { epoch: null, seq: 0, loading: null, pending: [] };

/** (Re)load the whole listing; operations arriving meanwhile are applied after it. */
function reloadListing() {
  if (sync.loading) return sync.loading;
  sync.pending = [];
  const load = async () => {
    try {
      const listing = await withAuth(() => api.list());
      tree.reset(listing.files);
      sync.epoch = listing.epoch ?? null;
      sync.seq = listing.seq ?? 0;
      if (!view.listed && !view.expandedRestored && tree.size <= AUTO_EXPAND_LIMIT) {
        for (const folder of allFolders("")) view.expanded.add(folder);
      }
      view.listed = true;
    } finally {
      sync.loading = null;
    }
    const pending = sync.pending;
    sync.pending = [];
    for (const message of pending) onOperation(message);
    scheduleRender();
  };
  sync.loading = load();
  return sync.loading;
}

function allFolders(folder) {
  const found = [];
  for (const entry of tree.children(folder)) {
    if (entry.is_directory) found.push(entry.path, ...allFolders(entry.path));
  }
  return found;
}

function onOperation(message) {
  if (sync.loading) {
    sync.pending.push(message);
    return;
  }
  if (message.epoch != null && sync.epoch != null && message.epoch !== sync.epoch) {
    // The server's journal was reset: what we hold may be stale in ways no replay can fix.
    activity.note("The server's journal changed; reloading the file list.");
    reloadListing().catch(reportError);
    return;
  }
  if (typeof message.seq === "number" && message.seq <= sync.seq) return; // already applied
  const change = tree.apply(message.operation);
  if (typeof message.seq === "number") sync.seq = message.seq;
  historyPanels.onOperation(message.operation);
  if (!change) return; // a kind that changes no live file (Purge), or one added later
  followChange(change);
  activity.change(change, message.source_client ?? null);
  scheduleRender();
}

/** Keep selection and expansion attached to paths that moved or vanished. */
function followChange(change) {
  if (change.kind === "Move") {
    renamePrefixed(view.expanded, change.from, change.path);
    const selected = view.selected;
    if (selected && (selected === change.from || selected.startsWith(`${change.from}/`))) {
      view.selected = change.path + selected.slice(change.from.length);
    }
    saveExpanded();
  } else if (change.kind === "Delete") {
    renamePrefixed(view.expanded, change.path, null);
    saveExpanded();
  }
  if (view.pendingSelect && view.pendingSelect === change.path && change.kind !== "Delete") {
    view.pendingSelect = null;
    selectPath(change.path, { focus: true });
  }
}

const live = new LiveConnection({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
  clientId,
  token: () => tokenStore.current(),
  since: () => (sync.epoch != null ? { epoch: sync.epoch, seq: sync.seq } : undefined),
});

live.addEventListener("ack", ({ detail: { message } }) => {
  if (!message.recovered || message.epoch !== sync.epoch) {
    if (view.listed) activity.note("Missed changes could not be replayed; reloaded the file list.");
    reloadListing().catch(reportError);
  }
});
live.addEventListener("operation", ({ detail: { message } }) => onOperation(message));
live.addEventListener("servererror", ({ detail: { message } }) => {
  if (message.code === "unauthorized") {
    signInAgain();
  } else if (message.code === "resync_required") {
    reloadListing().catch(reportError);
  } else {
    console.warn("Server error:", message.code, message.message);
  }
});
live.addEventListener("state", ({ detail }) => {
  showConnection(detail);
  // A refused upgrade looks like any dropped connection: ask the API whether it wants a token.
  if (detail.state === "offline" && detail.attempt % 3 === 1) {
    api.probe().catch((error) => {
      if (error instanceof AuthRequired) signInAgain();
    });
  }
});

// ---- auth --------------------------------------------------------------------------------

let tokenPrompt = null;

/** Run `action`; on 401 ask for a token (once for all concurrent callers) and try again. */
async function withAuth(action) {
  for (;;) {
    try {
      return await action();
    } catch (error) {
      if (!(error instanceof AuthRequired)) throw error;
      const hadToken = Boolean(tokenStore.current());
      if (live.state === "stopped") showConnection({ state: "unauthorized" });
      tokenPrompt ??= askToken(hadToken ? "That token was not accepted. Try again." : null).finally(
        () => {
          tokenPrompt = null;
        },
      );
      const token = await tokenPrompt;
      if (token === null) {
        showSignedOut();
        throw error;
      }
      if (token !== tokenStore.current()) tokenStore.set(token);
      updateAuthButtons();
    }
  }
}

let signingIn = false;

async function signInAgain() {
  if (signingIn) return;
  signingIn = true;
  live.stop("unauthorized");
  try {
    await withAuth(() => api.probe());
    live.start();
  } catch (error) {
    if (!(error instanceof AuthRequired)) reportError(error);
  } finally {
    signingIn = false;
  }
}

function showSignedOut() {
  live.stop("unauthorized");
  $("tree-message").textContent = "An access token is needed to see the files.";
  updateAuthButtons();
}

function updateAuthButtons() {
  const hasToken = Boolean(tokenStore.current());
  $("forget-token-button").hidden = !hasToken;
  $("sign-in-button").hidden = live.state !== "unauthorized";
}

// ---- connection indicator ----------------------------------------------------------------

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  offline: "Offline — reconnecting",
  unauthorized: "Sign-in required",
  stopped: "Disconnected",
};
let countdownTimer = null;

function showConnection({ state, retryIn }) {
  $("connection").dataset.state = state;
  const text = $("connection-text");
  if (text.textContent !== CONNECTION_TEXT[state]) text.textContent = CONNECTION_TEXT[state];
  $("reconnect-button").hidden = state !== "offline";
  clearInterval(countdownTimer);
  const detail = $("connection-detail");
  detail.textContent = "";
  if (state === "offline" && retryIn) {
    const at = Date.now() + retryIn;
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      detail.textContent = seconds ? `in ${seconds} s` : "";
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
  }
  updateAuthButtons();
}

// ---- tree view ---------------------------------------------------------------------------

const treeElement = $("tree");
const rows = new Map(); // path → <li>
let renderTimer = null;

function scheduleRender() {
  renderTimer ??= setTimeout(render, RENDER_DELAY_MS);
}

function visibleRows() {
  const found = [];
  const walk = (folder, level) => {
    const children = tree.children(folder);
    children.forEach((entry, index) => {
      found.push({ entry, level, setSize: children.length, position: index + 1 });
      if (entry.is_directory && view.expanded.has(entry.path)) walk(entry.path, level + 1);
    });
  };
  walk("", 1);
  return found;
}

function svgIcon(name, className = "icon") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", `#${name}`);
  svg.append(use);
  return svg;
}

let rowIds = 0;

function createRow(entry) {
  const id = `row-${++rowIds}`;
  const row = document.createElement("li");
  row.setAttribute("role", "treeitem");
  // Named by the file name alone; size and date are its description.
  row.setAttribute("aria-labelledby", `${id}-name`);
  row.setAttribute("aria-describedby", `${id}-size ${id}-modified`);
  row.className = entry.is_directory ? "row folder" : "row file";
  row.dataset.path = entry.path;
  row.dataset.kind = entry.is_directory ? "folder" : "file";
  const name = document.createElement("span");
  name.className = "name";
  const twisty = document.createElement("span");
  twisty.className = "twisty";
  if (entry.is_directory) twisty.append(svgIcon("i-chevron", "chevron"));
  const label = document.createElement("span");
  label.className = "label";
  label.id = `${id}-name`;
  label.textContent = baseName(entry.path);
  label.title = entry.path;
  name.append(twisty, svgIcon(entry.is_directory ? "i-folder" : "i-file"), label);
  const size = document.createElement("span");
  size.className = "size";
  size.id = `${id}-size`;
  const modified = document.createElement("time");
  modified.className = "modified";
  modified.id = `${id}-modified`;
  row.append(name, size, modified);
  return row;
}

const rendered = new WeakMap(); // row → what it shows now, so a render only touches changes

function updateRow(row, { entry, level, setSize, position }, tabStop) {
  const path = entry.path;
  const now = {
    level,
    setSize,
    position,
    selected: path === view.selected,
    expanded: entry.is_directory && view.expanded.has(path),
    tabStop: path === tabStop,
    size: entry.size,
    modified: entry.modified,
  };
  const before = rendered.get(row) ?? {};
  rendered.set(row, now);
  if (before.level !== level) {
    row.setAttribute("aria-level", String(level));
    row.style.setProperty("--level", String(level - 1));
  }
  if (before.setSize !== setSize) row.setAttribute("aria-setsize", String(setSize));
  if (before.position !== position) row.setAttribute("aria-posinset", String(position));
  if (before.selected !== now.selected) row.setAttribute("aria-selected", String(now.selected));
  if (entry.is_directory && before.expanded !== now.expanded) {
    row.setAttribute("aria-expanded", String(now.expanded));
  }
  if (before.tabStop !== now.tabStop) row.tabIndex = now.tabStop ? 0 : -1;
  const [, size, modified] = row.children;
  if (before.size !== entry.size && !entry.is_directory) size.textContent = formatSize(entry.size);
  if (before.modified !== entry.modified) {
    modified.textContent = formatModified(entry.modified);
    if (entry.modified) modified.dateTime = entry.modified;
  }
}

/** Make the tree's children exactly `ordered`, moving as few nodes as possible. */
function placeRows(ordered, keep) {
  for (const row of [...treeElement.children]) if (!keep.has(row)) row.remove();
  let cursor = treeElement.firstElementChild;
  for (const row of ordered) {
    if (row === cursor) cursor = cursor.nextElementSibling;
    else treeElement.insertBefore(row, cursor);
  }
}

function render() {
  renderTimer = null;
  if (view.selected && !tree.get(view.selected)) {
    // The selection vanished: fall back to its closest surviving folder.
    let folder = parentOf(view.selected);
    while (folder && !tree.get(folder)) folder = parentOf(folder);
    view.selected = folder || null;
  }
  const visible = visibleRows();
  const focusInTree = treeElement.contains(document.activeElement);
  const tabStop = visible.some((row) => row.entry.path === view.selected)
    ? view.selected
    : visible[0]?.entry.path;
  const ordered = [];
  const seen = new Set();
  for (const item of visible) {
    const path = item.entry.path;
    let row = rows.get(path);
    if (!row || row.dataset.kind !== (item.entry.is_directory ? "folder" : "file")) {
      row = createRow(item.entry);
      rows.set(path, row);
    }
    updateRow(row, item, tabStop);
    ordered.push(row);
    seen.add(path);
  }
  for (const path of [...rows.keys()]) if (!seen.has(path)) rows.delete(path);
  placeRows(ordered, new Set(ordered));
  if (focusInTree && tabStop && document.activeElement !== rows.get(tabStop)) {
    rows.get(tabStop).focus();
  }

  const message = $("tree-message");
  treeElement.hidden = visible.length === 0;
  if (view.listed) {
    message.hidden = visible.length !== 0;
    message.textContent = "No files yet. Choose Upload or drop files here.";
  }
  updateActions();
}

function selectPath(path, { focus = false } = {}) {
  view.selected = path;
  render();
  if (focus && path) rows.get(path)?.focus();
}

function toggleFolder(path, open = !view.expanded.has(path)) {
  if (open) view.expanded.add(path);
  else view.expanded.delete(path);
  saveExpanded();
  render();
}

function targetFolder() {
  const entry = view.selected && tree.get(view.selected);
  if (!entry) return "";
  return entry.is_directory ? entry.path : parentOf(entry.path);
}

function updateActions() {
  const entry = view.selected ? tree.get(view.selected) : null;
  $("download-button").disabled = !entry || entry.is_directory;
  $("versions-button").disabled = !entry || entry.is_directory;
  $("rename-button").disabled = !entry;
  $("delete-button").disabled = !entry;
  $("destination").textContent = `/${targetFolder()}`;
}

function rowOf(node) {
  return node instanceof Element ? node.closest("li.row") : null;
}

treeElement.addEventListener("click", (event) => {
  const row = rowOf(event.target);
  if (!row) return;
  const path = row.dataset.path;
  if (event.target.closest(".twisty") && row.dataset.kind === "folder") toggleFolder(path);
  selectPath(path, { focus: true });
});

treeElement.addEventListener("dblclick", (event) => {
  const row = rowOf(event.target);
  if (row && !event.target.closest(".twisty")) activate(row.dataset.path);
});

function activate(path) {
  const entry = tree.get(path);
  if (!entry) return;
  if (entry.is_directory) toggleFolder(path);
  else download(path);
}

treeElement.addEventListener("keydown", (event) => {
  const row = rowOf(event.target);
  if (!row || event.altKey || event.ctrlKey || event.metaKey) return;
  const path = row.dataset.path;
  const entry = tree.get(path);
  const ordered = [...treeElement.children];
  const index = ordered.indexOf(row);
  const goTo = (target) => target && selectPath(target.dataset.path, { focus: true });
  const open = entry?.is_directory && view.expanded.has(path);
  switch (event.key) {
    case "ArrowDown":
      goTo(ordered[index + 1]);
      break;
    case "ArrowUp":
      goTo(ordered[index - 1]);
      break;
    case "Home":
      goTo(ordered[0]);
      break;
    case "End":
      goTo(ordered.at(-1));
      break;
    case "ArrowRight":
      if (entry?.is_directory && !open) toggleFolder(path, true);
      else if (open) goTo(ordered[index + 1]?.dataset.path.startsWith(`${path}/`) && ordered[index + 1]);
      break;
    case "ArrowLeft":
      if (open) toggleFolder(path, false);
      else if (parentOf(path)) selectPath(parentOf(path), { focus: true });
      break;
    case "Enter":
      activate(path);
      break;
    case " ":
      selectPath(path, { focus: true });
      break;
    case "F2":
      renameSelected();
      break;
    case "Delete":
      deleteSelected();
      break;
    case "Escape":
      view.selected = null;
      render();
      return;
    default:
      return;
  }
  event.preventDefault();
});

// Clicking the empty part of the file list clears the selection (uploads go to the root).
$("files").addEventListener("click", (event) => {
  if (!rowOf(event.target) && !event.target.closest("button, a, input")) {
    view.selected = null;
    render();
  }
});

// ---- actions -----------------------------------------------------------------------------

function reportError(error) {
  if (error instanceof AuthRequired) return; // the token dialog was dismissed: already shown
  showAlert(error instanceof ApiError ? error.message : String(error.message ?? error));
  if (!(error instanceof ApiError)) console.error(error);
}

function runAction(action) {
  return withAuth(action).catch(reportError);
}

function download(path) {
  runAction(() => api.download(path));
}

async function newFolder() {
  const folder = targetFolder();
  const answer = await askText({
    title: "New folder",
    label: `Name of the new folder in /${folder}`,
    submitLabel: "Create",
    validate: (value) => cleanPath(value)[1],
  });
  if (answer === null) return;
  const path = joinPath(folder, cleanPath(answer)[0]);
  if (tree.get(path)) {
    showAlert(`“${path}” already exists.`);
    return;
  }
  expandTo(folder);
  view.pendingSelect = path;
  await runAction(() => api.mkdir(path));
  if (tree.get(path)) selectPath(path, { focus: true });
}

async function renameSelected() {
  const from = view.selected;
  const entry = from && tree.get(from);
  if (!entry) return;
  const name = baseName(from);
  const dot = entry.is_directory ? -1 : name.lastIndexOf(".");
  const nameStart = from.length - name.length;
  const answer = await askText({
    title: entry.is_directory ? "Rename or move folder" : "Rename or move file",
    label: "New path (use / to move into another folder)",
    value: from,
    submitLabel: "Rename",
    select: [nameStart, dot > 0 ? nameStart + dot : from.length],
    validate: (value) => {
      const [path, problem] = cleanPath(value);
      if (problem) return problem;
      if (path !== from && tree.get(path)) return `“${path}” already exists.`;
      if (entry.is_directory && path.startsWith(`${from}/`)) {
        return "A folder cannot be moved into itself.";
      }
      return null;
    },
  });
  if (answer === null) return;
  const to = cleanPath(answer)[0];
  if (to === from) return;
  expandTo(parentOf(to));
  view.pendingSelect = to;
  await runAction(() => api.move(from, to));
  rows.get(view.selected)?.focus();
}

async function deleteSelected() {
  const path = view.selected;
  const entry = path && tree.get(path);
  if (!entry) return;
  const confirmed = await confirmAction({
    title: entry.is_directory ? "Delete folder?" : "Delete file?",
    message: entry.is_directory
      ? `“${path}” and everything in it will be deleted for everyone.`
      : `“${path}” will be deleted for everyone.`,
    submitLabel: "Delete",
  });
  if (!confirmed) {
    rows.get(path)?.focus();
    return;
  }
  try {
    // Only what the user saw: a file changed meanwhile by someone else is not deleted.
    await withAuth(() => api.remove(path, { ifMatch: entry.hash }));
  } catch (error) {
    if (error instanceof ApiError && error.status === 412) {
      showAlert(`“${path}” changed on the server meanwhile and was not deleted.`);
    } else {
      reportError(error);
    }
  }
  rows.get(view.selected)?.focus();
}

// ---- uploads -----------------------------------------------------------------------------

const resumable = new ResumableUploads(api);
let resuming = null; // the paused upload whose file the resume picker is asking for

const transfers = new Transfers({
  api,
  list: $("transfers"),
  section: $("transfers-section"),
  withAuth,
  resumable,
  onResume: (record) => {
    // A page cannot re-read a file by itself after a reload: the user picks it again.
    resuming = record;
    $("resume-input").click();
  },
});

/** Queue uploads of `items` ({relativePath, file}) into `folder`, creating `emptyFolders`. */
async function upload(items, folder, emptyFolders = []) {
  const replacing = items.filter(({ relativePath, file }) => {
    const path = joinPath(folder, relativePath);
    const existing = tree.get(path);
    // An unfinished upload of this very file continues: replacing was agreed when it started.
    return existing && !existing.is_directory && !resumable.find(path, file);
  });
  let accepted = items;
  if (replacing.length) {
    const names = replacing.map(({ relativePath }) => joinPath(folder, relativePath));
    const replace = await confirmAction({
      title: replacing.length === 1 ? "Replace file?" : `Replace ${replacing.length} files?`,
      message:
        replacing.length === 1
          ? `“${names[0]}” already exists. Replace it with the uploaded file?`
          : `These already exist: ${names.slice(0, 5).join(", ")}${names.length > 5 ? ", …" : ""}. Replace them?`,
      submitLabel: "Replace",
    });
    if (!replace) accepted = items.filter((item) => !replacing.includes(item));
  }
  if (folder) expandTo(folder);
  for (const relative of emptyFolders) {
    await runAction(() => api.mkdir(joinPath(folder, relative)));
  }
  for (const { relativePath, file } of accepted) {
    const path = joinPath(folder, relativePath);
    const existing = tree.get(path);
    // Say what we believe is there, so a concurrent change is reported instead of overwritten.
    const precondition = existing?.hash ? { ifMatch: existing.hash } : { ifNoneMatch: "*" };
    transfers.add({ path, file, precondition });
  }
  render();
}

$("upload-button").addEventListener("click", () => $("file-input").click());
$("file-input").addEventListener("change", (event) => {
  const input = event.target;
  const items = Array.from(input.files, (file) => ({ relativePath: file.name, file }));
  input.value = "";
  if (items.length) upload(items, targetFolder()).catch(reportError);
});
$("resume-input").addEventListener("change", (event) => {
  const input = event.target;
  const file = input.files[0];
  const record = resuming;
  input.value = "";
  resuming = null;
  if (!file || !record) return;
  if (!resumable.matches(record, file)) {
    showAlert(
      `That is not the file of this upload: choose “${record.name}” (${formatSize(record.size)}, ` +
        `last modified ${new Date(record.lastModified).toLocaleString()}).`,
    );
    return;
  }
  transfers.add({ path: record.path, file, precondition: record.precondition ?? {} });
});
$("new-folder-button").addEventListener("click", () => newFolder().catch(reportError));
$("download-button").addEventListener("click", () => view.selected && download(view.selected));
$("rename-button").addEventListener("click", () => renameSelected().catch(reportError));
$("delete-button").addEventListener("click", () => deleteSelected().catch(reportError));

// ---- history: versions and trash ---------------------------------------------------------

const historyPanels = new HistoryPanels({
  api,
  clientId,
  withAuth,
  reportError,
  checkPath: (value) => {
    const [path, problem] = cleanPath(value);
    if (!problem && tree.get(path)) return [path, `“${path}” already exists.`];
    return [path, problem];
  },
});

$("versions-button").addEventListener("click", () => {
  const entry = view.selected && tree.get(view.selected);
  if (entry && !entry.is_directory) historyPanels.showVersions(entry.path);
});
$("trash-button").addEventListener("click", () => historyPanels.showTrash());

// ---- drag and drop -----------------------------------------------------------------------

installDropZone({
  destination: (target) => {
    const row = rowOf(target);
    if (!row) return { folder: targetFolder(), row: null };
    const entry = tree.get(row.dataset.path);
    if (entry?.is_directory) return { folder: entry.path, row };
    return { folder: parentOf(row.dataset.path), row: null };
  },
  hint: $("drop-hint"),
  hintFolder: $("drop-destination"),
  onDrop: upload,
  onError: reportError,
});

// ---- activity and alerts -----------------------------------------------------------------

const activity = new ActivityFeed($("activity"), $("activity-empty"), clientId);

function showAlert(text) {
  const alert = document.createElement("div");
  alert.className = "alert";
  const message = document.createElement("span");
  message.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "small";
  close.textContent = "Dismiss";
  close.addEventListener("click", () => alert.remove());
  alert.append(message, close);
  $("alerts").append(alert);
  setTimeout(() => alert.remove(), 10_000);
}

// ---- start -------------------------------------------------------------------------------

$("client-id").textContent = clientId;
$("reconnect-button").addEventListener("click", () => live.reconnectNow());
$("sign-in-button").addEventListener("click", () => start());
$("forget-token-button").addEventListener("click", () => {
  tokenStore.clear();
  updateAuthButtons();
  live.stop("stopped");
  start();
});

async function start() {
  try {
    await reloadListing();
  } catch (error) {
    if (error instanceof AuthRequired) return; // the dialog was dismissed; "Enter token" retries
    reportError(error);
    // Keep going: the live connection will reconcile (recovered:false → listing) once it works.
  }
  render();
  live.start();
  transfers.restorePending(); // after the listing, so a needed token is already known
}

restoreExpanded();
updateAuthButtons();
start();
