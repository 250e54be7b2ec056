// The detail panel of one inventory photo, in place of the queue and table: the photo (zoomable:
// inventory_zoom.js) beside every field as an input (inventory_fields.js), the reading's state,
// time and warnings, and the row's actions — Confirm all fields, Chat about this photo (opens it in
// the single-photo view, as an opened file: the queue on the server gives the model to the chat by
// itself), Read again, Remove — and Previous / Next through the table as filtered and sorted.
import { $, t, onLangChange } from "./ui.js";
import { showError } from "./notice.js";
import { inv, act, onInventory, when } from "./inventory_data.js";
import { api } from "./api.js";
import { photoBlob } from "./inventory_images.js";
import { visibleIds } from "./inventory_table.js";
import { removePhoto } from "./inventory_queue.js";
import { zoomView } from "./inventory_zoom.js";
import { fieldEditor } from "./inventory_fields.js";
import { openBlob } from "./photo.js";
import { showView } from "./views.js";

let open = null;     // {id, editor, zoom, url, back (the element to give the focus back to)}

function btn(key, onClick, cls = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.dataset.i18nKey = key;
  b.textContent = t(key);
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

export function openDetail(id) {
  const row = inv.rows.get(id);
  if (!row) return;
  const back = open?.back ?? document.activeElement;
  closeDetail(false);
  const panel = $("#inv-detail");
  const head = document.createElement("div");
  head.className = "inv-dhead";
  const title = document.createElement("h2");
  title.id = "inv-detail-title";
  const info = document.createElement("p");
  info.className = "muted small inv-dinfo";
  const nav = document.createElement("div");
  nav.className = "inv-dnav";
  nav.append(btn("inv.prev", () => step(-1)), btn("inv.next", () => step(1)), btn("inv.back", () => closeDetail()));
  head.append(title, nav);
  const actions = document.createElement("div");
  actions.className = "inv-dactions";
  actions.append(
    btn("inv.confirmAll", confirmAll, "primary"),
    btn("inv.chat", () => chatAbout(id)),
    btn("inv.requeue", () => act(`/api/inventory/photos/${id}/requeue`)),
    btn("inv.remove", () => removePhoto(inv.rows.get(id))),
  );
  const body = document.createElement("div");
  body.className = "inv-dbody";
  const photoBox = document.createElement("div");
  photoBox.className = "inv-dphoto";
  const fieldsBox = document.createElement("div");
  fieldsBox.className = "inv-dfields";
  const warnings = document.createElement("ul");
  warnings.className = "warnings";
  const error = document.createElement("p");
  error.className = "inv-error";
  fieldsBox.append(error, warnings);
  body.append(photoBox, fieldsBox);
  panel.replaceChildren(head, info, actions, body);
  panel.setAttribute("aria-labelledby", "inv-detail-title");
  const zoom = zoomView(photoBox);
  const editor = fieldEditor(fieldsBox, id);
  open = { id, editor, zoom, url: null, back, title, info, actions, warnings, error };
  document.querySelector("main").dataset.detail = "1";
  panel.hidden = false;
  render();
  loadPhoto(id);
  title.tabIndex = -1;
  title.focus();
}

async function loadPhoto(id) {
  const row = inv.rows.get(id);
  if (!row || row.width == null) return;       // a file that was never a photo has none to show
  try {
    const url = URL.createObjectURL(await photoBlob(id));
    if (open?.id !== id) return URL.revokeObjectURL(url);
    open.url = url;
    // a format this browser cannot draw (HEIC, TIFF): the server's thumbnail instead
    open.zoom.img.addEventListener("error", async () => {
      const small = URL.createObjectURL(await (await api(`/api/inventory/photos/${id}/thumb`)).blob());
      if (open?.id !== id) return URL.revokeObjectURL(small);
      URL.revokeObjectURL(open.url);
      open.url = small;
      open.zoom.show(small, t("inv.photoAlt", { name: row.name }));
      open.info.append(" · " + t("inv.noPreview"));
    }, { once: true });
    open.zoom.show(url, t("inv.photoAlt", { name: row.name }));
  } catch (e) {
    showError(e);
  }
}

function render() {
  if (!open) return;
  const row = inv.rows.get(open.id);
  if (!row) return closeDetail();       // removed (here or elsewhere)
  open.title.textContent = row.name;
  const parts = [t("inv.state." + row.state)];
  if (row.read_at) parts.push(t("inv.readAt", { when: when(row.read_at), s: row.read_s ?? "?" }));
  if (row.width) parts.push(`${row.width}×${row.height}`);
  // where the reading came from: a photo added by `glmv read-plate FOLDER`, a remote engine
  if (row.source === "cli") parts.push(t("inv.fromCli"));
  if (row.engine?.startsWith("remote ")) parts.push(t("inv.byEngine", { url: row.engine.slice(7) }));
  open.info.textContent = parts.join(" · ");
  const [confirm, , requeue] = open.actions.children;
  confirm.disabled = !row.fields || !row.unchecked.length;
  requeue.hidden = !(row.state === "error" || row.state === "skipped") || row.width == null;
  open.error.hidden = !row.error;
  open.error.textContent = row.error || "";
  open.warnings.replaceChildren(...(row.warnings || []).map((w) => Object.assign(document.createElement("li"), { textContent: w })));
  for (const b of open.actions.parentElement.querySelectorAll("button[data-i18n-key]")) b.textContent = t(b.dataset.i18nKey);
  const fieldsShown = !!row.fields;
  for (const el of $("#inv-detail").querySelectorAll(".inv-field")) el.hidden = !fieldsShown;
  if (fieldsShown) open.editor.update(row);
  else if (!row.error) open.error.hidden = false, open.error.textContent = t("inv.notRead");
}

async function confirmAll() {
  if (!open) return;
  await open.editor.flush();    // what was typed counts: confirm accepts the fields left as read
  await act(`/api/inventory/photos/${open.id}/confirm`);
}

async function chatAbout(id) {
  const row = inv.rows.get(id);
  try {
    await openBlob(await photoBlob(id), row.name);
    showView("single");
    $("#question").focus();
  } catch (e) {
    showError(e);
  }
}

function step(d) {
  if (!open) return;
  const ids = visibleIds(), i = ids.indexOf(open.id);
  const next = ids[i < 0 ? 0 : i + d];
  if (next != null) openDetail(next);
}

export function closeDetail(focusBack = true) {
  if (!open) return;
  if (open.url) URL.revokeObjectURL(open.url);
  const back = open.back;
  open = null;
  $("#inv-detail").hidden = true;
  $("#inv-detail").replaceChildren();
  delete document.querySelector("main").dataset.detail;
  if (focusBack) {
    const tr = back?.closest?.("tr[data-id]");
    const again = tr && $(`#inv-table tr[data-id="${tr.dataset.id}"] .inv-name button`);
    (again || (back?.isConnected ? back : null))?.focus();
  }
}

export const detailOpen = () => open?.id ?? null;

export function wireDetail() {
  onInventory((changed) => { if (open && (changed.has(open.id) || !inv.rows.has(open.id))) render(); });
  onLangChange(render);
  // Esc closes the panel unless it is meant for a box (an IME, a selection). Taken before app.js's
  // own Esc (which would stop a running chat answer): the panel is what the technician looks at.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || !open || e.target.closest?.("input, textarea, select, dialog")) return;
    if (e.target !== document.body && !e.target.closest?.("#inv-detail")) return;
    e.stopPropagation();
    closeDetail();
  }, true);
}
