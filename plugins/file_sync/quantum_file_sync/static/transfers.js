// Upload queue and the Transfers panel: a few uploads at a time, each with a progress bar,
// cancel, and retry (or "replace anyway" after a failed precondition).

import { formatSize } from "./format.js";

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
  #nextId = 1;

  /**
   * @param {object} options
   * @param {import("./api.js").Api} options.api
   * @param {HTMLElement} options.list     the <ul> of transfers
   * @param {HTMLElement} options.section  its panel (hidden when empty)
   * @param {(action: () => Promise<any>) => Promise<any>} options.withAuth
   */
  constructor({ api, list, section, withAuth }) {
    this.api = api;
    this.list = list;
    this.section = section;
    this.withAuth = withAuth;
    addEventListener("beforeunload", (event) => {
      if (this.busy) event.preventDefault();
    });
  }

  get busy() {
    return this.#active.size > 0 || this.#queue.length > 0;
  }

  add({ path, file, precondition = {} }) {
    const transfer = { id: this.#nextId++, path, file, precondition, loaded: 0, total: file.size };
    transfer.element = this.#createRow(transfer);
    this.list.append(transfer.element);
    this.section.hidden = false;
    this.#queue.push(transfer);
    this.#setState(transfer, "queued");
    this.#pump();
  }

  #pump() {
    while (this.#active.size < PARALLEL && this.#queue.length) this.#run(this.#queue.shift());
  }

  async #run(transfer) {
    this.#active.add(transfer);
    this.#setState(transfer, "active");
    try {
      await this.withAuth(() => {
        const { promise, abort } = this.api.upload(transfer.path, transfer.file, {
          precondition: transfer.precondition,
          onProgress: (loaded, total) => {
            transfer.loaded = loaded;
            transfer.total = total;
            this.#showProgress(transfer);
          },
        });
        transfer.abort = abort;
        return promise;
      });
      transfer.loaded = transfer.total;
      this.#setState(transfer, "done");
      setTimeout(() => this.#remove(transfer), DONE_LINGER_MS);
    } catch (error) {
      transfer.conflict = error.status === 412;
      if (error.code === "aborted") this.#remove(transfer);
      else this.#setState(transfer, "error", describe(error, transfer.precondition));
    } finally {
      transfer.abort = null;
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
    const queued = this.#queue.indexOf(transfer);
    if (queued !== -1) {
      this.#queue.splice(queued, 1);
      this.#remove(transfer);
    } else {
      transfer.abort?.();
    }
  }

  #remove(transfer) {
    if (this.#active.has(transfer) || this.#queue.includes(transfer)) return;
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
    bar.value = 0;
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
    status.textContent = `${formatSize(loaded)} of ${formatSize(total)} · ${percent}%`;
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
        this.#button("Dismiss", `Dismiss ${name}`, () => this.#remove(transfer)),
      );
    }
  }
}
