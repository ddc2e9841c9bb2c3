// The activity feed: who changed what, newest first (a role="log" list).

import { formatClock } from "./format.js";
import { parentOf } from "./tree.js";

const LIMIT = 50;

function describe({ kind, path, from, isDirectory }) {
  const noun = isDirectory ? " folder" : "";
  switch (kind) {
    case "Create":
      return [`created${noun}`, path];
    case "Update":
      return ["updated", path];
    case "Delete":
      return [`deleted${noun}`, path];
    case "Move":
      return [parentOf(from) === parentOf(path) ? `renamed${noun}` : `moved${noun}`, from, path];
    default:
      return [kind, path];
  }
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

export class ActivityFeed {
  /**
   * @param {HTMLElement} list      the <ol role="log">
   * @param {HTMLElement} emptyHint hidden once something happened
   * @param {string} clientId       this tab's id: its own changes read "You"
   */
  constructor(list, emptyHint, clientId) {
    this.list = list;
    this.emptyHint = emptyHint;
    this.clientId = clientId;
  }

  /** A change from the tree (`FileTree.apply`'s result) made by `source` (null: the server). */
  change(change, source) {
    const [verb, path, to] = describe(change);
    const mine = source === this.clientId;
    const actor = span(mine ? "who you" : "who", mine ? "You" : (source ?? "Server"));
    const parts = [actor, ` ${verb} `, span("path", path)];
    if (to) parts.push(" → ", span("path", to));
    this.#add(parts);
  }

  /** Something about the page itself (e.g. a full reload of the listing). */
  note(text) {
    this.#add([span("note", text)]);
  }

  #add(parts) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = formatClock(now);
    item.append(time, " ", ...parts);
    this.list.prepend(item);
    while (this.list.children.length > LIMIT) this.list.lastElementChild.remove();
    this.emptyHint.hidden = true;
  }
}
