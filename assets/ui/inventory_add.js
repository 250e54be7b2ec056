// Adding photos to the inventory: the file dialog (several at once), or files and whole folders
// dropped on the window while the inventory is shown (folders walked through
// webkitGetAsEntry, each file named by its path inside the dropped folder, "room2/pump.jpg").
// Files are sent one per request (the server's body limit is one photo), two at a time, with a
// running count; a file larger than a photo may be is not sent but recorded as an error row
// (POST /api/inventory/refused). A file that could not be sent (the server went away) is kept in
// the list with a "Try again" button: nothing the user chose is silently dropped.
import { $, t, onLangChange } from "./ui.js";
import { api, describeError } from "./api.js";
import { inv, refresh } from "./inventory_data.js";

const PARALLEL = 2;
const adding = { total: 0, done: 0, duplicates: [], failed: [], errors: 0, running: false, lastError: "" };

export async function addFiles(files) {
  files = files.filter((f) => f && !f.name.startsWith("."));
  if (!files.length) return;
  if (!adding.running) Object.assign(adding, { total: 0, done: 0, duplicates: [], failed: [], errors: 0, lastError: "" });
  adding.total += files.length;
  const todo = [...files];
  if (adding.running) { pending.push(...todo); render(); return; }
  adding.running = true;
  pending.push(...todo);
  render();
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  adding.running = false;
  render();
  refresh().catch(() => {});
}

const pending = [];

async function worker() {
  for (let f = pending.shift(); f; f = pending.shift()) {
    try {
      await sendOne(f);
    } catch (e) {
      adding.failed.push(f);
      adding.lastError = describeError(e);
    }
    adding.done++;
    render();
    if (adding.done % 5 === 0) refresh().catch(() => {});   // the new rows appear as they come
  }
}

const nameOf = (f) => f.relPath || f.name;

async function sendOne(file) {
  if (file.size > inv.maxPhotoBytes) {
    const res = await (await api("/api/inventory/refused", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: nameOf(file), bytes: file.size, modified: file.lastModified }),
    })).json();
    if (res.duplicate) adding.duplicates.push(nameOf(file)); else adding.errors++;
    return;
  }
  const form = new FormData();
  form.append("photo", file, nameOf(file));
  const body = await (await api("/api/inventory/photos", { method: "POST", body: form })).json();
  for (const a of body.added) {
    if (a.duplicate) adding.duplicates.push(a.name);
    else if (a.state === "error") adding.errors++;
  }
}

function retry() {
  const again = adding.failed.splice(0);
  adding.total -= again.length;
  adding.done -= again.length;
  addFiles(again);
}

function render() {
  const box = $("#inv-adding");
  const parts = [];
  if (adding.running) parts.push(t("inv.adding", { n: Math.min(adding.done + 1, adding.total), total: adding.total }));
  else if (adding.total) parts.push(t("inv.added", { n: adding.total - adding.failed.length }));
  if (adding.errors) parts.push(t("inv.addedErrors", { n: adding.errors }));
  if (adding.duplicates.length) {
    const names = adding.duplicates.slice(0, 3).join(", ") + (adding.duplicates.length > 3 ? ", …" : "");
    parts.push(t("inv.duplicates", { n: adding.duplicates.length, names }));
  }
  const text = document.createElement("span");
  text.textContent = parts.join(" · ");
  const kids = [text];
  if (!adding.running && adding.failed.length) {
    const fail = document.createElement("span");
    fail.className = "inv-fail";
    fail.textContent = " " + t("inv.addFailed", { n: adding.failed.length, msg: adding.lastError });
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = t("inv.retry");
    again.addEventListener("click", retry);
    kids.push(fail, again);
  }
  box.replaceChildren(...kids);
  box.hidden = !adding.total;
  box.dataset.running = adding.running ? "1" : "";
}
onLangChange(render);

// Every file under a dropped folder (readEntries answers in chunks: call it until it is empty).
async function walkEntry(entry, out) {
  if (entry.name.startsWith(".")) return;
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    const rel = entry.fullPath.replace(/^\/+/, "");
    file.relPath = rel || file.name;   // kept beside the File: its own name cannot hold a "/"
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const chunk = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!chunk.length) break;
      for (const e of chunk) await walkEntry(e, out);
    }
  }
}

// The files of a drop, folders walked; the entries must be taken during the event itself.
export async function droppedFiles(dataTransfer) {
  const items = [...(dataTransfer?.items || [])].filter((i) => i.kind === "file");
  const entries = items.map((i) => i.webkitGetAsEntry?.());
  if (!entries.length || entries.some((e) => !e)) return [...(dataTransfer?.files || [])];
  const out = [];
  for (const e of entries) await walkEntry(e, out);
  out.sort((a, b) => nameOf(a).localeCompare(nameOf(b), undefined, { numeric: true }));
  return out;
}

export function wireAdd() {
  $("#inv-add").addEventListener("click", () => $("#inv-file").click());
  $("#inv-file").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
}
