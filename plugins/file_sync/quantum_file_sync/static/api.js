// HTTP side of the page: the file_sync API with token auth and client identification.

const TOKEN_KEY = "quantum.token";

/** The API answered 401: the caller should ask for a token and try again. */
export class AuthRequired extends Error {
  constructor() {
    super("An access token is required");
    this.name = "AuthRequired";
  }
}

/** Any other failed request; `code` is the API's error code (or "network"/"aborted"). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** The token lives in sessionStorage: this tab only, gone when the tab closes. */
export const tokenStore = {
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  },
  set(token) {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Storage disabled: the token still works until the page is reloaded.
    }
    memoryToken = token;
  },
  clear() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing stored.
    }
    memoryToken = null;
  },
  current() {
    return this.get() ?? memoryToken;
  },
};
let memoryToken = null;

/** `a/b c/d` → `a/b%20c/d`: every segment encoded, separators kept. */
export function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** The error a failed response stands for (401 → AuthRequired, else ApiError with its code). */
export function errorFrom(status, bodyText, statusText) {
  if (status === 401) return new AuthRequired();
  let code = `http_${status}`;
  let message = statusText || `HTTP ${status}`;
  try {
    const body = JSON.parse(bodyText);
    if (body && typeof body.error === "string") message = body.error;
    if (body && typeof body.code === "string") code = body.code;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(status, code, message);
}

export class Api {
  constructor(clientId) {
    this.clientId = clientId;
  }

  headers(extra = {}) {
    const headers = { "X-Quantum-Client": this.clientId, ...extra };
    const token = tokenStore.current();
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async request(method, url, { body, headers, signal } = {}) {
    let response;
    try {
      response = await fetch(url, {
        method,
        body,
        headers: this.headers(headers),
        cache: "no-store",
        credentials: "same-origin",
        signal,
      });
    } catch (error) {
      if (signal?.aborted) throw new ApiError(0, "aborted", "Cancelled");
      throw new ApiError(0, "network", `Cannot reach the server (${error.message})`);
    }
    if (!response.ok) throw errorFrom(response.status, await response.text(), response.statusText);
    return response;
  }

  async json(method, url, payload) {
    const response = await this.request(method, url, {
      body: payload === undefined ? undefined : JSON.stringify(payload),
      headers: payload === undefined ? {} : { "Content-Type": "application/json" },
    });
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  /** The whole tree, following pagination: `{epoch, seq, files}` (epoch/seq of the first page). */
  async list() {
    const base = "/api/list?recursive=true";
    let page = await this.json("GET", base);
    const listing = { epoch: page.epoch, seq: page.seq, files: [] };
    for (;;) {
      for (const file of page.files) listing.files.push(file);
      if (!page.next) return listing;
      page = await this.json("GET", `${base}&cursor=${encodeURIComponent(page.next)}`);
    }
  }

  /** A cheap authenticated request, to tell "needs a token" from "server down". */
  async probe() {
    await this.request("GET", "/api/list?recursive=false&limit=1");
  }

  mkdir(path) {
    return this.json("POST", "/api/mkdir", { path });
  }

  move(from, to) {
    return this.json("POST", "/api/move", { from, to });
  }

  /** Delete a file or a folder (with its content); `ifMatch`: the hash the caller saw. */
  async remove(path, { ifMatch } = {}) {
    const headers = ifMatch ? { "If-Match": `"${ifMatch}"` } : {};
    await this.request("DELETE", `/api/files/${encodePath(path)}`, { headers });
  }

  /**
   * PUT a File with upload progress (fetch has none, hence XMLHttpRequest).
   * Returns `{promise, abort}`; `precondition` is `{ifMatch: hash}` or `{ifNoneMatch: "*"}`.
   */
  upload(path, file, { onProgress, precondition = {} } = {}) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open("PUT", `/api/files/${encodePath(path)}`);
      const extra = { "Content-Type": "application/octet-stream" };
      if (precondition.ifMatch) extra["If-Match"] = `"${precondition.ifMatch}"`;
      if (precondition.ifNoneMatch) extra["If-None-Match"] = precondition.ifNoneMatch;
      for (const [name, value] of Object.entries(this.headers(extra))) {
        xhr.setRequestHeader(name, value);
      }
      xhr.upload.addEventListener("progress", (event) => {
        onProgress?.(event.loaded, event.lengthComputable ? event.total : file.size);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve(xhr.responseText ? JSON.parse(xhr.responseText) : null);
          } catch {
            resolve(null);
          }
        } else {
          reject(errorFrom(xhr.status, xhr.responseText, xhr.statusText));
        }
      });
      xhr.addEventListener("error", () => reject(new ApiError(0, "network", "Network error")));
      xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "Cancelled")));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }

  /** Save a file. */
  download(path) {
    return this.save(`/api/files/${encodePath(path)}`, path.split("/").pop());
  }

  /**
   * Save what `url` answers as `name`. Without a token the browser streams it straight to disk;
   * with one, the Authorization header forces a fetch into a Blob first (a plain link cannot
   * carry it).
   */
  async save(url, name) {
    let href = url;
    let blobUrl = null;
    if (tokenStore.current()) {
      const response = await this.request("GET", url);
      blobUrl = URL.createObjectURL(await response.blob());
      href = blobUrl;
    }
    const link = document.createElement("a");
    link.href = href;
    link.download = name;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    if (blobUrl) setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000);
  }
}
