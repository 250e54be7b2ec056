// The inventory's queue as the technician watches it: one line for the whole batch ("12 left ·
// about 4 min (measured 18 s per photo on this computer)"), the engine's state when it waits or
// stopped, Pause / Resume, and the photos still to read in their order, the one being read with its
// progress bar (the server's queue.current: phase, fraction, fields, time left). Each queued photo
// can move up or down, be skipped or removed (after a confirmation).
import { $, t, i18nEl, onLangChange, placeChildren } from "./ui.js";
import { inv, act, onInventory, queuedIds } from "./inventory_data.js";
import { thumbImg } from "./inventory_images.js";
import { confirmDialog } from "./confirm.js";

const SHOWN = 60;   // a long queue lists its head; the rest is a count

function button(key, aria, onClick, vars = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = t(key);
  b.setAttribute("aria-label", t(aria, vars));
  b.title = t(aria, vars);
  b.addEventListener("click", onClick);
  return b;
}

export async function removePhoto(row) {
  if (await confirmDialog(t("inv.removeConfirm", { name: row.name }), t("inv.remove"))) {
    await act(`/api/inventory/photos/${row.id}/remove`);
  }
}

function move(id, delta) {
  const ids = queuedIds();
  const i = ids.indexOf(id), j = i + delta;
  if (i < 0 || j < 0 || j >= ids.length) return;
  [ids[i], ids[j]] = [ids[j], ids[i]];
  act("/api/inventory/reorder", { body: { ids } }).then(() => {
    // keep the keyboard where it was: the same button on the moved photo
    document.querySelector(`#inv-queue-list li[data-id="${id}"] button[data-move="${delta}"]`)?.focus();
  });
}

function minutes(s) {
  return s < 90 ? t("inv.aboutS", { s: Math.max(1, Math.round(s)) }) : t("inv.aboutMin", { m: Math.round(s / 60) });
}

function summary() {
  const q = inv.queue;
  if (inv.offline) return t("inv.offline");
  if (!q) return "";
  const left = q.counts.queued + q.counts.reading;
  const where = q.engine?.kind === "remote" ? t("inv.onRemote") : t("inv.onThis");
  let s;
  if (!left) s = inv.ids.length ? t("inv.allRead", { n: q.counts.done }) : t("inv.empty");
  else if (q.per_photo_s == null) s = t("inv.leftMeasuring", { n: left });
  else s = t("inv.left", { n: left, time: minutes(q.estimate_s ?? q.per_photo_s * left), per: q.per_photo_s.toFixed(1), where });
  if (q.state === "paused") s = t("inv.paused") + " · " + s;
  return s;
}

function progressBar(cur) {
  const box = document.createElement("div");
  box.className = "progress";
  box.setAttribute("role", "progressbar");
  box.setAttribute("aria-valuemin", "0");
  box.setAttribute("aria-valuemax", "100");
  const pct = Math.max(0, Math.min(100, Math.round((cur.fraction ?? 0) * 100)));
  box.setAttribute("aria-valuenow", String(pct));
  box.dataset.phase = cur.phase;
  const label = document.createElement("div");
  label.className = "progress-label";
  const phase = cur.phase === "fields" && cur.fields_total
    ? t("inv.fieldsRead", { done: cur.fields_done, total: cur.fields_total })
    : t(["photo", "vision", "prompt"].includes(cur.phase) ? "progress." + cur.phase : "inv.starting");
  const eta = cur.eta_s == null ? t("progress.estimating") : t("progress.left", { s: Math.max(1, Math.round(cur.eta_s)) });
  label.textContent = `${phase} — ${eta}`;
  box.setAttribute("aria-label", label.textContent);
  const track = document.createElement("div");
  track.className = "progress-track";
  const fill = document.createElement("div");
  fill.style.width = pct + "%";
  track.append(fill);
  box.append(label, track);
  return box;
}

function itemEl(row, k, n) {
  const li = document.createElement("li");
  li.dataset.id = row.id;
  li.dataset.state = row.state;
  const name = document.createElement("span");
  name.className = "inv-qname";
  name.textContent = row.name;
  name.title = row.name;
  const state = i18nEl("span", "inv.state." + row.state);
  state.className = "inv-qstate";
  const tools = document.createElement("span");
  tools.className = "inv-qtools";
  if (row.state === "queued") {
    const up = button("inv.up", "inv.upAria", () => move(row.id, -1), { name: row.name });
    const down = button("inv.down", "inv.downAria", () => move(row.id, 1), { name: row.name });
    up.dataset.move = "-1";
    down.dataset.move = "1";
    up.disabled = k === 0;
    down.disabled = k === n - 1;
    tools.append(up, down);
  }
  tools.append(button("inv.skip", "inv.skipAria", () => act(`/api/inventory/photos/${row.id}/skip`), { name: row.name }),
               button("inv.remove", "inv.removeAria", () => removePhoto(row), { name: row.name }));
  const main = document.createElement("div");
  main.className = "inv-qmain";
  main.append(name, state);
  li.append(thumbImg(row.id), main, tools);
  return li;
}

export function renderQueue() {
  const q = inv.queue;
  $("#inv-summary").textContent = summary();
  // stopped by the engine: Resume tries it again (after the settings were fixed, say)
  const paused = q?.state === "paused" || q?.state === "stopped";
  const pause = $("#inv-pause");
  pause.textContent = t(paused ? "inv.resume" : "inv.pause");
  pause.setAttribute("aria-label", t(paused ? "inv.resumeAria" : "inv.pauseAria"));
  pause.disabled = !q || q.state === "no_engine";
  pause.dataset.paused = paused ? "1" : "";
  // an engine that waits, stopped or is missing says why, as the server put it
  const msg = $("#inv-engine-msg");
  const why = q && ["waiting", "stopped", "no_engine"].includes(q.state);
  msg.hidden = !why;
  msg.textContent = why ? t("inv.engine." + q.state, { msg: q.message || "" }) : "";
  msg.dataset.state = q?.state || "";

  const current = new Map((q?.current || []).map((c) => [c.id, c]));
  const reading = inv.ids.filter((id) => inv.rows.get(id)?.state === "reading");
  const queued = queuedIds();
  const list = [...reading, ...queued];
  // an item is rebuilt only when its row or its place changed, so the buttons keep the focus
  const keep = new Map();
  const items = list.slice(0, SHOWN).map((id) => {
    const row = inv.rows.get(id), k = queued.indexOf(id);
    const key = `${row.rev}|${row.state}|${k === 0}|${k === queued.length - 1}|${lang()}`;
    let item = items_.get(id);
    if (!item || item.key !== key) item = { li: itemEl(row, k, queued.length), key };
    keep.set(id, item);
    const cur = current.get(id), main = item.li.querySelector(".inv-qmain");
    main.querySelector(".progress")?.remove();
    if (cur) main.append(progressBar(cur));
    return item.li;
  });
  items_ = keep;
  if (list.length > SHOWN) items.push(i18nEl("li", "inv.more", { n: list.length - SHOWN }));
  placeChildren($("#inv-queue-list"), items);
  $("#inv-queue").hidden = !list.length && !why;
}

let items_ = new Map();     // id → {li, key}: the queue's items as drawn
const lang = () => document.documentElement.lang;

export function wireQueue() {
  $("#inv-pause").addEventListener("click", () => {
    act(`/api/inventory/queue/${["paused", "stopped"].includes(inv.queue?.state) ? "resume" : "pause"}`);
  });
  onInventory(renderQueue);
  onLangChange(renderQueue);
}
