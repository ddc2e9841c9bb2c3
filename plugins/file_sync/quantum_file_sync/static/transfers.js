// Upload queue and the Transfers panel: a few uploads at a time, each with a progress bar,
// cancel, and retry (or "replace anyway" after a failed precondition). Big files go through
// resumable.js; the unfinished ones of an earlier visit are listed as paused, with "Resume…".

import { formatSize } from "./format.js";
import { RESUMABLE_THRESHOLD, uploadKey } from "./resumable.js";

const PARALLEL = 3;
const DONE_LINGER_MS = 4000;

function describe(error, precondition) {
  if (error.status === 412) {
    return precondition.ifNoneMatch
      ? "Already exists on the server — not replaced"
      : "Changed on the server meanwhile — not replaced";
  }
  if (error.status === 413) return "Too large for this server";
  return error.message || "Upload failed";
}

export class Transfers {
  #queue = [];
  #active = new Set();
  #paused = new Map(); // upload key → row of an unfinished upload from an earlier visit
  #shown = new Set(); // this visit's transfers that still have a row
  #nextId = 1;

  /**
   * @param {object} options
   * @param {import("./api.js").Api} options.api
   * @param {HTMLElement} options.list     the <ul> of transfers
   * @param {HTMLElement} options.section  its panel (hidden when empty)
   * @param {(action: () => Promise<any>) => Promise<any>} options.withAuth
   * @param {import("./resumable.js").ResumableUploads} [options.resumable]
   * @param {(record: object) => void} [options.onResume] "Resume…" of a paused upload: the
   *        page must ask for the file again (it cannot re-read it by itself)
   */
  constructor({ api, list, section, withAuth, resumable = null, onResume = () => {} }) {
    this.api = api;
    this.list = list;
    this.section = section;
    this.withAuth = withAuth;
    this.resumable = resumable;
    this.onResume = onResume;
    addEventListener("beforeunload", (event) => {
      if (this.busy) event.preventDefault();
    });
  }

  get busy() {
    return this.#active.size > 0 || this.#queue.length > 0;
  }

  add({ path, file, precondition = {} }) {
    const stored = this.#resumable(file) ? this.resumable.find(path, file) : null;
    if (stored) {
      // The same file again: continue its upload, with the protection it was started with.
      precondition = stored.precondition ?? precondition;
      const paused = this.#paused.get(stored.key);
      if (paused) this.#dropPaused(paused);
    }
    const transfer = { id: this.#nextId++, path, file, precondition, loaded: 0, total: file.size };
    transfer.element = this.#createRow(transfer);
    this.list.append(transfer.element);
    this.section.hidden = false;
    this.#shown.add(transfer);
    this.#queue.push(transfer);
    this.#setState(transfer, "queued");
    this.#pump();
  }

  /** Show the unfinished uploads of earlier visits, then ask the server how far each got. */
  restorePending() {
    if (!this.resumable) return;
    for (const record of this.resumable.pending()) {
      if (this.#paused.has(record.key) || this.#owns(record.key)) continue;
      const transfer = {
        id: this.#nextId++,
        path: record.path,
        record,
        loaded: record.offset,
        total: record.size,
      };
      transfer.element = this.#createRow(transfer);
      this.list.append(transfer.element);
      this.section.hidden = false;
      this.#paused.set(record.key, transfer);
      this.#setState(transfer, "paused");
      this.resumable
        .refresh(record)
        .then((updated) => {
          if (this.#paused.get(record.key) !== transfer) return;
          if (!updated) {
            this.#dropPaused(transfer); // finished, cancelled elsewhere or expired
            return;
          }
          transfer.record = updated;
          transfer.loaded = updated.offset;
          this.#showPaused(transfer);
        })
        .catch(() => {
          // Server unreachable or a token needed: keep showing what this browser remembers.
        });
    }
  }

  /** Whether a transfer of this visit (queued, running or failed) is the one stored as `key`. */
  #owns(key) {
    return [...this.#shown].some((transfer) => uploadKey(transfer.path, transfer.file) === key);
  }

  #resumable(file) {
    return (
      Boolean(this.resumable) && !this.resumableUnavailable && file.size >= RESUMABLE_THRESHOLD
    );
  }

  #dropPaused(transfer) {
    this.#paused.delete(transfer.record.key);
    transfer.element.remove();
    this.section.hidden = this.list.children.length === 0;
  }

  #pump() {
    while (this.#active.size < PARALLEL && this.#queue.length) this.#run(this.#queue.shift());
  }

  async #run(transfer) {
    this.#active.add(transfer);
    this.#setState(transfer, "active");
    try {
      await this.withAuth(() => {
        const options = {
          precondition: transfer.precondition,
          onProgress: (loaded, total) => {
            transfer.loaded = loaded;
            transfer.total = total;
            this.#retrying(transfer, null);
            this.#showProgress(transfer);
          },
          onRetry: (delay) => this.#retrying(transfer, delay),
        };
        const put = () => {
          const { promise, abort } = this.api.upload(transfer.path, transfer.file, options);
          transfer.abort = abort;
          return promise;
        };
        if (!this.#resumable(transfer.file)) return put();
        const { promise, abort } = this.resumable.upload(transfer.path, transfer.file, options);
        transfer.abort = abort;
        return promise.catch((error) => {
          if (error.code !== "resumable_unavailable") throw error;
          this.resumableUnavailable = true; // this server has no /api/uploads: PUT from now on
          return put();
        });
      });
      transfer.loaded = transfer.total;
      this.#setState(transfer, "done");
      setTimeout(() => this.#remove(transfer), DONE_LINGER_MS);
    } catch (error) {
      transfer.conflict = error.status === 412;
      this.#active.delete(transfer); // before #remove, which keeps rows of active transfers
      if (error.code === "aborted") this.#remove(transfer);
      else this.#setState(transfer, "error", describe(error, transfer.precondition));
    } finally {
      transfer.abort = null;
      this.#retrying(transfer, null);
      this.#active.delete(transfer);
      this.#pump();
    }
  }

  #retry(transfer, { force }) {
    if (force) transfer.precondition = {};
    transfer.loaded = 0;
    this.#queue.push(transfer);
    this.#setState(transfer, "queued");
    this.#pump();
  }

  #cancel(transfer) {
    if (transfer.record) {
      // A paused upload of an earlier visit: delete it on the server and forget it.
      this.#dropPaused(transfer);
      this.resumable.discard(transfer.record).catch(() => {});
      return;
    }
    const queued = this.#queue.indexOf(transfer);
    if (queued !== -1 || !this.#active.has(transfer)) {
      if (queued !== -1) this.#queue.splice(queued, 1);
      const stored = this.#storedFor(transfer);
      if (stored) this.resumable.discard(stored).catch(() => {});
      this.#remove(transfer);
    } else {
      transfer.abort?.({ discard: true });
    }
  }

  /** Show "Connection lost — retrying in N s" (counting down) until progress resumes. */
  #retrying(transfer, delay) {
    clearInterval(transfer.retryTimer);
    transfer.retryTimer = null;
    transfer.retryAt = delay === null ? null : Date.now() + delay;
    if (delay === null) return;
    this.#showProgress(transfer);
    transfer.retryTimer = setInterval(() => this.#showProgress(transfer), 1000);
  }

  /** The remembered resumable upload of this transfer's file, if any. */
  #storedFor(transfer) {
    return transfer.file && this.#resumable(transfer.file)
      ? this.resumable.find(transfer.path, transfer.file)
      : null;
  }

  #remove(transfer) {
    if (this.#active.has(transfer) || this.#queue.includes(transfer)) return;
    this.#shown.delete(transfer);
    transfer.element.remove();
    this.section.hidden = this.list.children.length === 0;
  }

  #createRow(transfer) {
    const name = transfer.path;
    const row = document.createElement("li");
    row.className = "transfer";
    const title = document.createElement("div");
    title.className = "transfer-name";
    title.textContent = name;
    title.title = name;
    const bar = document.createElement("progress");
    bar.max = Math.max(transfer.total, 1);
    bar.value = transfer.loaded;
    bar.setAttribute("aria-label", `Upload of ${name}`);
    const footer = document.createElement("div");
    footer.className = "transfer-footer";
    const status = document.createElement("span");
    status.className = "transfer-status";
    const buttons = document.createElement("span");
    buttons.className = "transfer-buttons";
    footer.append(status, buttons);
    row.append(title, bar, footer);
    Object.assign(transfer, { bar, status, buttons });
    return row;
  }

  #button(label, accessibleName, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "small";
    button.textContent = label;
    button.setAttribute("aria-label", accessibleName);
    button.addEventListener("click", onClick);
    return button;
  }

  #showProgress(transfer) {
    const { bar, status, loaded, total } = transfer;
    bar.max = Math.max(total, 1);
    bar.value = Math.min(loaded, total);
    const percent = total ? Math.floor((loaded / total) * 100) : 100;
    const done = `${formatSize(loaded)} of ${formatSize(total)} · ${percent}%`;
    if (transfer.retryAt) {
      const seconds = Math.ceil((transfer.retryAt - Date.now()) / 1000);
      const when = seconds > 0 ? `retrying in ${seconds} s` : "retrying…";
      status.textContent = `Connection lost — ${when} · ${done}`;
    } else {
      status.textContent = done;
    }
  }

  #showPaused(transfer) {
    const { loaded, total } = transfer;
    transfer.bar.max = Math.max(total, 1);
    transfer.bar.value = Math.min(loaded, total);
    const percent = total ? Math.floor((loaded / total) * 100) : 0;
    transfer.status.textContent =
      `Paused at ${formatSize(loaded)} of ${formatSize(total)} · ${percent}% — ` +
      `choose ${transfer.record.name} again to resume`;
  }

  #setState(transfer, state, message = "") {
    const name = transfer.path;
    transfer.element.dataset.state = state;
    transfer.buttons.replaceChildren();
    if (state === "queued") {
      transfer.status.textContent = "Waiting…";
      transfer.bar.removeAttribute("value");
      transfer.buttons.append(
        this.#button("Cancel", `Cancel upload of ${name}`, () => this.#cancel(transfer)),
      );
    } else if (state === "active") {
      this.#showProgress(transfer);
      transfer.buttons.append(
        this.#button("Cancel", `Cancel upload of ${name}`, () => this.#cancel(transfer)),
      );
    } else if (state === "done") {
      transfer.bar.value = transfer.bar.max;
      transfer.status.textContent = `Uploaded · ${formatSize(transfer.total)}`;
    } else if (state === "error") {
      transfer.status.textContent = message;
      const force = transfer.conflict;
      const again = force ? "Replace anyway" : "Retry";
      transfer.buttons.append(
        this.#button(again, `${again}: ${name}`, () => this.#retry(transfer, { force })),
      );
      if (this.#storedFor(transfer)) {
        // Still resumable on the server: leaving it is "Cancel", which deletes it there too.
        transfer.buttons.append(
          this.#button("Cancel", `Cancel upload of ${name}`, () => this.#cancel(transfer)),
        );
      } else {
        transfer.buttons.append(
          this.#button("Dismiss", `Dismiss ${name}`, () => this.#remove(transfer)),
        );
      }
    } else if (state === "paused") {
      this.#showPaused(transfer);
      transfer.buttons.append(
        this.#button("Resume…", `Resume upload of ${name}`, () => this.onResume(transfer.record)),
        this.#button("Cancel", `Cancel upload of ${name}`, () => this.#cancel(transfer)),
      );
    }
  }
}
