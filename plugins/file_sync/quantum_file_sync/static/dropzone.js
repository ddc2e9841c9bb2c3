// Drag-and-drop of files and folders from the desktop onto the page.

function carriesFiles(event) {
  return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types).includes("Files");
}

function readEntries(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

/** Expand dropped folders into their files (and the folders that have none). */
async function collectDropped(dropped) {
  const files = [];
  const emptyFolders = [];
  const walk = async (directory, prefix) => {
    const relative = prefix + directory.name;
    const reader = directory.createReader();
    let count = 0;
    for (let batch = await readEntries(reader); batch.length; batch = await readEntries(reader)) {
      for (const entry of batch) {
        count += 1;
        if (entry.isDirectory) await walk(entry, `${relative}/`);
        else {
          const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
          files.push({ relativePath: `${relative}/${file.name}`, file });
        }
      }
    }
    if (count === 0) emptyFolders.push(relative);
  };
  for (const { entry, file } of dropped) {
    if (entry?.isDirectory) await walk(entry, "");
    else if (file) files.push({ relativePath: file.name, file });
  }
  return { files, emptyFolders };
}

/**
 * Accept drops anywhere on the document.
 * @param {object} options
 * @param {(target: EventTarget) => {folder: string, row: Element|null}} options.destination
 *        where a drop on `target` goes, and the row to highlight (if any)
 * @param {HTMLElement} options.hint        shown while dragging
 * @param {HTMLElement} options.hintFolder  names the destination folder in the hint
 * @param {(files, folder: string, emptyFolders: string[]) => Promise<void>} options.onDrop
 *        `files` are `{relativePath, file}`
 * @param {(error: Error) => void} options.onError
 */
export function installDropZone({ destination, hint, hintFolder, onDrop, onError }) {
  let depth = 0;
  let highlighted = null;

  const show = (target) => {
    const { folder, row } = destination(target);
    if (highlighted !== row) {
      highlighted?.classList.remove("drop-target");
      row?.classList.add("drop-target");
      highlighted = row;
    }
    hintFolder.textContent = `/${folder}`;
    hint.hidden = false;
    document.body.classList.add("dragging");
  };
  const hide = () => {
    depth = 0;
    highlighted?.classList.remove("drop-target");
    highlighted = null;
    hint.hidden = true;
    document.body.classList.remove("dragging");
  };

  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    show(event.target);
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    show(event.target);
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    depth -= 1;
    if (depth <= 0) hide();
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    const { folder } = destination(event.target);
    hide();
    // Entries must be taken synchronously, while the drop event's data store is readable.
    const dropped = Array.from(event.dataTransfer.items ?? [], (item) =>
      item.kind === "file" ? { entry: item.webkitGetAsEntry?.(), file: item.getAsFile() } : null,
    ).filter(Boolean);
    if (dropped.length === 0) {
      for (const file of event.dataTransfer.files) dropped.push({ entry: null, file });
    }
    collectDropped(dropped)
      .then(({ files, emptyFolders }) => onDrop(files, folder, emptyFolders))
      .catch(onError);
  });
}
