// Resumable uploads of big files: tus 1.0 on /api/uploads (docs/chunks.md, "Resumable uploads").
//
// A file of RESUMABLE_THRESHOLD bytes or more is created with `POST /api/uploads?path=P` and sent
// in PATCH parts of PART_SIZE. After each part the upload URL and the server's offset are kept in
// localStorage, keyed by target path + file name + size + lastModified, so that
//   - a dropped network is retried with backoff, re-reading the offset with HEAD first;
//   - after a reload of the page the same file, picked or dropped again, continues where it
//     stopped (a page cannot re-read a file without the user picking it again).
// Nothing is visible at the target path before the last part has arrived and the server has
// committed the file (with the If-Match / If-None-Match given at creation).

import { ApiError, AuthRequired, errorFrom } from "./api.js";

export const RESUMABLE_THRESHOLD = 8 * 1024 * 1024;
export const PART_SIZE = 8 * 1024 * 1024;

const STORE_KEY = "quantum.uploads";
const TUS = { "Tus-Resumable": "1.0.0" };
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const MAX_FAILURES = 12; // consecutive failed attempts (about two minutes) before giving up
const MAX_CONFLICTS = 5; // 409s in a row (someone else writing the same upload?)
const STALL_MS = 60_000; // a part whose body makes no progress for this long is retried

/** The key of an upload of `file` to `path`: the same file picked again finds it. */
export function uploadKey(path, file) {
  return JSON.stringify([path, file.name, file.size, file.lastModified]);
}

function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function isRecord(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.key === "string" &&
    typeof value.url === "string" &&
    typeof value.path === "string" &&
    typeof value.name === "string" &&
    Number.isSafeInteger(value.size) &&
    Number.isSafeInteger(value.offset)
  );
}

/** Unfinished uploads in localStorage (shared by the tabs of this origin); memory if disabled. */
class UploadStore {
  #memory = {};

  #read() {
    try {
      const parsed = JSON.parse(localStorage.getItem(STORE_KEY) ?? "{}");
      return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
    } catch {
      return { ...this.#memory };
    }
  }

  #write(all) {
    this.#memory = all;
    try {
      if (Object.keys(all).length) localStorage.setItem(STORE_KEY, JSON.stringify(all));
      else localStorage.removeItem(STORE_KEY);
    } catch {
      // Storage disabled or full: the upload still resumes after a network drop, not a reload.
    }
  }

  get(key) {
    const record = this.#read()[key];
    return isRecord(record) ? record : null;
  }

  put(record) {
    const all = this.#read();
    all[record.key] = { ...record, updated: Date.now() };
    this.#write(all);
  }

  remove(key) {
    const all = this.#read();
    if (!(key in all)) return;
    delete all[key];
    this.#write(all);
  }

  all() {
    return Object.values(this.#read())
      .filter(isRecord)
      .sort((a, b) => (a.created ?? 0) - (b.created ?? 0));
  }
}

function retryable(error) {
  if (error instanceof AuthRequired) return false;
  // network, a server restarting or overloaded, tus' 423 (another request is still appending)
  return error.status === 0 || error.status === 423 || error.status === 429 || error.status >= 500;
}

function gone(error) {
  return error.status === 404 || error.status === 410;
}

/** `Upload-Limit: max-append-size=N` (IETF draft) caps the size of one PATCH. */
function appendLimit(response) {
  const match = /(?:^|[,\s])max-append-size=(\d+)/.exec(response.headers.get("Upload-Limit") ?? "");
  return match ? Number(match[1]) : null;
}

function offsetOf(value) {
  const offset = Number(value);
  return value !== null && value !== "" && Number.isSafeInteger(offset) && offset >= 0
    ? offset
    : null;
}

export class ResumableUploads {
  /** @param {import("./api.js").Api} api */
  constructor(api) {
    this.api = api;
    this.store = new UploadStore();
  }

  /** Unfinished uploads remembered by this browser (oldest first). */
  pending() {
    return this.store.all();
  }

  /** The remembered upload of `file` to `path`, if any. */
  find(path, file) {
    return this.store.get(uploadKey(path, file));
  }

  /** Whether `file` is the file of `record` (same name, size and modification time). */
  matches(record, file) {
    return (
      record.name === file.name &&
      record.size === file.size &&
      record.lastModified === file.lastModified
    );
  }

  /**
   * Ask the server how far `record` got: the updated record, or null when the server no longer
   * has it (finished, cancelled or expired; it is then forgotten). Network errors are thrown.
   */
  async refresh(record) {
    try {
      const response = await this.api.request("HEAD", record.url, { headers: TUS });
      const offset = offsetOf(response.headers.get("Upload-Offset"));
      if (offset === null) return record;
      const updated = { ...record, offset };
      this.store.put(updated);
      return updated;
    } catch (error) {
      if (!gone(error)) throw error;
      this.store.remove(record.key);
      return null;
    }
  }

  /** Cancel an upload: forget it here and `DELETE` it on the server (best effort). */
  async discard(record) {
    this.store.remove(record.key);
    try {
      await this.api.request("DELETE", record.url, { headers: TUS });
    } catch (error) {
      if (!gone(error) && !(error instanceof AuthRequired)) throw error;
    }
  }

  /**
   * Upload `file` to `path`, continuing a remembered upload of the same file when there is one.
   * Same shape as `Api.upload`: `{promise, abort}`; `abort({discard: true})` also cancels the
   * upload on the server, a plain `abort()` keeps it resumable.
   * @param {object} options
   * @param {(loaded: number, total: number) => void} [options.onProgress]
   * @param {(delayMs: number, error: Error) => void} [options.onRetry] a retry is scheduled
   * @param {{ifMatch?: string, ifNoneMatch?: string}} [options.precondition]
   */
  upload(path, file, options = {}) {
    const job = new UploadJob(this, path, file, options);
    return { promise: job.run(), abort: (how) => job.abort(how) };
  }
}

class UploadJob {
  #owner;
  #aborted = false;
  #discard = false;
  #controller = null;
  #xhr = null;
  #wake = null;
  #sentLast = false;

  constructor(owner, path, file, { onProgress, onRetry, precondition = {} }) {
    this.#owner = owner;
    this.path = path;
    this.file = file;
    this.key = uploadKey(path, file);
    this.onProgress = onProgress ?? (() => {});
    this.onRetry = onRetry ?? (() => {});
    this.precondition = precondition;
    this.record = null;
  }

  get #api() {
    return this.#owner.api;
  }

  get #store() {
    return this.#owner.store;
  }

  abort({ discard = false } = {}) {
    this.#aborted = true;
    this.#discard ||= discard;
    this.#xhr?.abort();
    this.#controller?.abort();
    this.#wake?.();
  }

  #checkAborted() {
    if (this.#aborted) throw new ApiError(0, "aborted", "Cancelled");
  }

  async run() {
    try {
      return await this.#run();
    } finally {
      if (this.#discard && this.record) {
        this.#owner.discard(this.record).catch(() => {});
      }
    }
  }

  async #run() {
    const size = this.file.size;
    let record = this.#store.get(this.key);
    let needsSync = Boolean(record); // a remembered upload: ask the server where it stands
    let failures = 0;
    let conflicts = 0;
    this.record = record;
    if (record) this.onProgress(record.offset, size);
    for (;;) {
      this.#checkAborted();
      try {
        if (!record) {
          record = this.record = await this.#create();
          needsSync = false;
        } else if (needsSync) {
          const offset = await this.#head(record);
          if (offset === null) {
            // Finished by the request whose answer we lost, or expired: see which one.
            if (this.#sentLast && (await this.#landed())) break;
            this.#store.remove(record.key);
            record = this.record = null;
            continue; // expired on the server: start over
          }
          record.offset = offset;
          this.#store.put(record);
          needsSync = false;
        }
        this.onProgress(record.offset, size);
        if (record.offset >= size) break;
        const end = Math.min(size, record.offset + (record.partSize || PART_SIZE));
        const offset = await this.#patch(record, end);
        if (offset === null || offset <= record.offset || offset > size) {
          needsSync = true; // an answer we do not understand: trust HEAD instead
        } else {
          record.offset = offset;
          if (offset < size) this.#store.put(record);
        }
        failures = 0;
        conflicts = 0;
      } catch (error) {
        if (error.code === "aborted" || this.#aborted) throw new ApiError(0, "aborted", "Cancelled");
        if (error.status === 409 && record && ++conflicts <= MAX_CONFLICTS) {
          needsSync = true; // the server holds another offset: continue from its own
          continue;
        }
        if (retryable(error) && ++failures <= MAX_FAILURES) {
          const delay = BACKOFF_MS[Math.min(failures - 1, BACKOFF_MS.length - 1)];
          this.onRetry(delay, error);
          await this.#sleep(delay);
          needsSync = Boolean(record);
          continue;
        }
        if (error.code === "resumable_unavailable") throw error;
        if (record && gone(error)) {
          this.#store.remove(record.key);
          throw new ApiError(
            error.status,
            "upload_gone",
            "The unfinished upload is no longer on the server — Retry starts over",
          );
        }
        if (retryable(error)) {
          // Still resumable: the record stays, Retry (or picking the file again) continues.
          throw new ApiError(error.status, "network", "Connection lost — Retry continues");
        }
        if (record && !(error instanceof AuthRequired)) {
          // Refused for good (412 at commit, 413, 400…): this upload can never complete.
          this.#owner.discard(record).catch(() => {});
        }
        throw error;
      }
    }
    if (this.record) this.#store.remove(this.record.key);
    this.onProgress(size, size);
    return null;
  }

  /** Abortable fetch through the page's API client (auth, client id). */
  async #request(method, url, headers) {
    this.#controller = new AbortController();
    try {
      return await this.#api.request(method, url, { headers, signal: this.#controller.signal });
    } finally {
      this.#controller = null;
    }
  }

  async #create() {
    const headers = {
      ...TUS,
      "Upload-Length": String(this.file.size),
      "Upload-Metadata": `path ${base64(this.path)},filename ${base64(this.file.name)}`,
    };
    if (this.precondition.ifMatch) headers["If-Match"] = `"${this.precondition.ifMatch}"`;
    if (this.precondition.ifNoneMatch) headers["If-None-Match"] = this.precondition.ifNoneMatch;
    let response;
    try {
      response = await this.#request(
        "POST",
        `/api/uploads?path=${encodeURIComponent(this.path)}`,
        headers,
      );
    } catch (error) {
      if ([404, 405, 501].includes(error.status)) {
        // A server without resumable uploads: the caller falls back to a single PUT.
        throw new ApiError(error.status, "resumable_unavailable", "No resumable uploads here");
      }
      throw error;
    }
    const location = response.headers.get("Location");
    if (!location) throw new ApiError(response.status, "bad_response", "No upload URL in the answer");
    const record = {
      key: this.key,
      url: new URL(location, window.location.href).href,
      path: this.path,
      name: this.file.name,
      size: this.file.size,
      lastModified: this.file.lastModified,
      offset: offsetOf(response.headers.get("Upload-Offset")) ?? 0,
      partSize: appendLimit(response) ? Math.min(PART_SIZE, appendLimit(response)) : undefined,
      precondition: this.precondition,
      created: Date.now(),
    };
    this.#store.put(record);
    this.record = record; // so that a cancel that came in meanwhile deletes it on the server
    if (this.#aborted) throw new ApiError(0, "aborted", "Cancelled");
    return record;
  }

  /** The server's offset, or null when it does not know the upload (any more). */
  async #head(record) {
    try {
      const response = await this.#request("HEAD", record.url, TUS);
      const limit = appendLimit(response);
      if (limit) record.partSize = Math.min(PART_SIZE, limit);
      const offset = offsetOf(response.headers.get("Upload-Offset"));
      if (offset === null) throw new ApiError(response.status, "bad_response", "No Upload-Offset");
      return offset;
    } catch (error) {
      if (gone(error)) return null;
      throw error;
    }
  }

  /** After a lost answer to the last part: is the file at its path with our size? */
  async #landed() {
    try {
      const url = `/api/files/${this.path.split("/").map(encodeURIComponent).join("/")}`;
      const response = await this.#request("HEAD", url, {});
      return Number(response.headers.get("Content-Length")) === this.file.size;
    } catch (error) {
      if (gone(error)) return false;
      throw error;
    }
  }

  /** Send `[record.offset, end)` of the file; resolves the server's new offset. */
  #patch(record, end) {
    const start = record.offset;
    const size = this.file.size;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.#xhr = xhr;
      let stalled = false;
      let lastProgress = Date.now();
      let bodySent = false;
      const watchdog = setInterval(() => {
        if (!bodySent && Date.now() - lastProgress > STALL_MS) {
          stalled = true;
          xhr.abort();
        }
      }, 5000);
      const finish = () => {
        clearInterval(watchdog);
        this.#xhr = null;
      };
      xhr.open("PATCH", record.url);
      const headers = this.#api.headers({
        ...TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": String(start),
      });
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.addEventListener("progress", (event) => {
        lastProgress = Date.now();
        if (event.lengthComputable && event.loaded >= event.total) bodySent = true;
        this.onProgress(start + event.loaded, size);
      });
      xhr.upload.addEventListener("load", () => {
        bodySent = true;
      });
      xhr.addEventListener("load", () => {
        finish();
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(offsetOf(xhr.getResponseHeader("Upload-Offset")) ?? end);
        } else {
          reject(errorFrom(xhr.status, xhr.responseText, xhr.statusText));
        }
      });
      xhr.addEventListener("error", () => {
        finish();
        reject(new ApiError(0, "network", "Network error"));
      });
      xhr.addEventListener("abort", () => {
        finish();
        if (stalled) reject(new ApiError(0, "network", "The upload stalled"));
        else reject(new ApiError(0, "aborted", "Cancelled"));
      });
      if (end >= size) this.#sentLast = true;
      xhr.send(this.file.slice(start, end));
    });
  }

  /** Wait `ms`, or less when the browser comes back online or the upload is cancelled. */
  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        removeEventListener("online", done);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      addEventListener("online", done);
      this.#wake = done;
    });
  }
}
