// The inventory as the page knows it: the server's rows merged by id, the table order, the queue's
// state, and the polling that keeps them current (GET /api/inventory?since=REV: only the rows
// changed since the last answer, plus every id, so a removed row disappears). The views
// (inventory_queue.js, inventory_table.js, inventory_detail.js) redraw from here when told.
// Contract: runtime/app/server/routes_inventory.py.
import { api } from "./api.js";
import { showError } from "./notice.js";

export const inv = {
  rev: 0,               // the revision of the last answer: the next poll asks for what came after
  ids: [],              // every photo id in table order
  rows: new Map(),      // id → row as the server sent it
  queue: null,          // {state, message, counts, current, per_photo_s, measured, estimate_s, engine}
  fields: [],           // [{key, label}] the plate fields, "other" last
  flagBelow: 0,
  maxPhotoBytes: 20 * 2 ** 20,
  loaded: false,
  offline: false,       // the last poll failed (the server is gone or restarting)
};

const listeners = [];
// fn(changedIds: Set, orderChanged: bool) after every answer that changed something
export const onInventory = (fn) => { listeners.push(fn); };

let inFlight = null;

// One poll; concurrent callers share it. `full` asks for every row (after a server restart the
// revisions may start elsewhere, so a revision lower than ours also triggers a full reload).
export function refresh(full = false) {
  if (inFlight) return full ? inFlight.catch(() => {}).then(() => refresh(true)) : inFlight;
  inFlight = poll(full).finally(() => { inFlight = null; });
  return inFlight;
}

async function poll(full) {
  const since = full || !inv.loaded ? 0 : inv.rev;
  let body;
  try {
    body = await (await api(`/api/inventory?since=${since}`)).json();
  } catch (e) {
    inv.offline = true;
    notify(new Set(), false);
    throw e;
  }
  inv.offline = false;
  if (since && body.rev < inv.rev) return poll(true);   // another inventory answered: start over
  const changed = new Set();
  for (const row of body.rows) {
    inv.rows.set(row.id, row);
    changed.add(row.id);
  }
  const present = new Set(body.ids);
  for (const id of [...inv.rows.keys()]) {
    if (!present.has(id)) { inv.rows.delete(id); changed.add(id); }
  }
  const orderChanged = body.ids.join() !== inv.ids.join();
  Object.assign(inv, { rev: body.rev, ids: body.ids, queue: body.queue, fields: body.fields,
                       flagBelow: body.flag_below, maxPhotoBytes: body.max_photo_bytes, loaded: true });
  // an id with no row (it changed between two answers of ours): the next poll fetches all
  if (body.ids.some((id) => !inv.rows.has(id))) inv.loaded = false;
  notify(changed, orderChanged);
  return body;
}

function notify(changed, orderChanged) {
  for (const fn of listeners) {
    try { fn(changed, orderChanged); } catch (e) { console.error(e); }
  }
}

// A POST/PUT/DELETE on the inventory, then a poll so the page shows its effect at once; errors as
// the banner's sentence (returns false then).
export async function act(path, { method = "POST", body } = {}) {
  try {
    const opts = { method };
    if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers = { "Content-Type": "application/json" };
    }
    const res = await (await api(path, opts)).json();
    await refresh().catch(() => {});
    return res;
  } catch (e) {
    showError(e);
    return false;
  }
}

// Whether the queue is moving (poll every second) or quiet (every few seconds).
export function busy() {
  const q = inv.queue;
  if (!q) return false;
  return q.state === "reading" || q.current.length > 0 || (q.counts.queued > 0 && q.state === "idle");
}

// A row's value for a field as the table holds it: the technician's when there is one.
export function valueOf(row, key) {
  if (row.corrections && key in row.corrections) return row.corrections[key].value;
  return row.fields ? row.fields[key] ?? null : null;
}

// A value as text ("other" is a list of {name, value}: one "name: value" per line).
export function valueText(key, v, sep = "; ") {
  if (v == null) return "";
  if (key === "other" && Array.isArray(v)) return v.map((o) => (o.name ? `${o.name}: ${o.value ?? ""}` : o.value ?? "")).join(sep);
  return typeof v === "string" ? v : JSON.stringify(v);
}

// The queued photos in order (the queue's own list; reading ones first).
export const queuedIds = () => inv.ids.filter((id) => inv.rows.get(id)?.state === "queued");

// The server's times ("2026-12-07T23:14:07+0000") as this computer's local date and time.
export function when(iso) {
  if (!iso) return "";
  const d = new Date(String(iso).replace(/([+-]\d\d)(\d\d)$/, "$1:$2"));
  return isNaN(d) ? String(iso) : d.toLocaleString(document.documentElement.lang || undefined);
}

// How sure the model was, as a percentage ("" when the reading has no confidence for it).
export const pct = (c) => (c == null ? "" : `${Math.round(c * 100)} %`);

// The marks a field's cell or input gets: "fixed" (the technician changed it), "checked" (accepted
// as read), "flag" (low confidence, not yet checked), "open" (not yet checked) — with the tooltip.
export function fieldMark(row, key, t) {
  const c = row.corrections?.[key], model = row.fields ? row.fields[key] ?? null : null;
  const conf = row.confidence?.[key];
  if (c) {
    const same = JSON.stringify(c.value ?? null) === JSON.stringify(model);
    return same ? { cls: "checked", sym: "✓", title: t("inv.checkedTitle", { when: when(c.changed) }) }
      : { cls: "fixed", sym: "✎", title: t("inv.fixedTitle", { when: when(c.changed), read: when(row.read_at),
                                                   model: valueText(key, model) || t("inv.notOnPlate") }) };
  }
  if (row.flagged?.includes(key)) return { cls: "flag", sym: "⚑", title: t("inv.flagTitle", { pct: pct(conf) }) };
  return { cls: "open", sym: "", title: conf == null ? t("inv.openTitle") : t("inv.openConfTitle", { pct: pct(conf) }) };
}
