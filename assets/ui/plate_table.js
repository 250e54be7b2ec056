// The nameplate table: one row per field in the server's order (GET /api/plate-fields: {fields:
// [{key, label}, …]} in runtime/tasks/plate.py's order, then "other"; fetched once, labels
// translated by key: ui.js fieldLabel), then one row per "other" pair the plate had. While a
// reading streams (plate.js) every row is there from the start, marked pending, and each is filled
// the moment its value is final; at the end the table is redrawn from the finished reading with the
// rows warnings are about highlighted and the parsed column — or, after Stop, the rows read keep
// their values, the others are marked "not read" and a banner says the reading is incomplete and
// was not logged. Copy the table as text; export the readings log.
import { $, t, fieldLabel, onLangChange } from "./ui.js";
import { api, download } from "./api.js";
import { showError, showInfo, showNoticeRender } from "./notice.js";
import { store } from "./state.js";
import { onPhotoChanged, updateButtons } from "./photo.js";

let fields = null;          // [{key, label}] as the server lists them, once fetched
let fieldsRequest = null;   // that request while it runs (or once it succeeded)

export function plateFields() {
  fieldsRequest ??= api("/api/plate-fields").then((r) => r.json()).then((body) => (fields = body.fields))
    .catch((e) => { fieldsRequest = null; throw e; });   // not kept: the next reading asks again
  return fieldsRequest;
}

// What the table shows, kept so that a language switch can redraw it (strings are re-rendered from
// state, never patched):
//   state    "reading" (rows wait for their values), "done", or "incomplete" (stopped)
//   values   {key: value} of the fields read so far ("other": a list of {name, value})
//   read     the keys whose value is final: a row is filled exactly when its key is here
//   reading  the finished reading ({fields, parsed, warnings, raw}); null while reading
let shown = null;

export function startTable() {
  shown = { state: "reading", values: {}, read: new Set(), reading: null };
  store.plateResult = null;   // Copy waits for the finished reading
  renderTable();
}

// One field's value is final (a "field" event): its row is replaced by the filled one; the "other"
// placeholder by one row per pair. Rows are replaced, not edited, so an observer sees each fill once.
export function fillField(key, value) {
  if (!shown || shown.state !== "reading") return;
  shown.values[key] = value;
  shown.read.add(key);
  const old = [...$("#plate-table tbody").querySelectorAll(`tr[data-key="${CSS.escape(key)}"]`)];
  if (!old.length) return;    // a key the field list does not have: shown with the finished reading
  const fresh = (key === "other" ? otherRows() : fieldRows().filter((r) => r.key === key)).map((r) => rowEl(r, new Set()));
  old[0].replaceWith(...fresh);
  old.slice(1).forEach((tr) => tr.remove());
}

// The end of a reading: the server's reading, complete or (after Stop) holding what was read.
export function finishTable(reading, incomplete) {
  const values = reading.fields || {};
  if (incomplete) {
    // the fields that arrived, and any the reading has a value for (its other rows are null)
    for (const [k, v] of Object.entries(values)) if (v != null && !(Array.isArray(v) && !v.length)) shown.read.add(k);
  } else {
    shown.read = new Set(fields.map((f) => f.key));
  }
  Object.assign(shown, { values: { ...values }, reading, state: incomplete ? "incomplete" : "done" });
  store.plateResult = reading;
  renderTable();
}

// When the stream broke or was dropped before the server's last event: what arrived, as a reading.
export function partialReading() {
  const got = Object.fromEntries(fields.filter((f) => f.key !== "other").map((f) => [f.key, shown.values[f.key] ?? null]));
  return { fields: { ...got, other: shown.values.other ?? [] }, parsed: {}, warnings: [], raw: "" };
}
export const tableHasReads = () => !!shown?.read.size;

export function hideTable() {
  shown = null;
  store.plateResult = null;
  $("#plate").hidden = true;
}

// the table shown (and what Copy copies) belongs to the previous photo
onPhotoChanged(hideTable);
onLangChange(() => { if (shown) renderTable(); });

// Which fields a warning is about: the server starts each warning with the field key; the power
// check ("power … does not match V·I·PF·η") implicates voltage and current as well.
function warnedFields(warnings) {
  const known = new Set(fields.map((f) => f.key).filter((k) => k !== "other"));
  const keys = new Set();
  for (const w of warnings) {
    const m = /^([a-z_]+)[:\s]/.exec(w);
    if (m && known.has(m[1])) keys.add(m[1]);
    if (/V·I/.test(w)) ["rated_voltage", "current", "power"].forEach((k) => keys.add(k));
  }
  return keys;
}

// one row per field in the server's order, then one per "other" pair the plate had
function fieldRows() {
  return fields.filter((f) => f.key !== "other").map((f) => ({
    key: f.key, label: fieldLabel(f), value: shown.values[f.key] ?? null, read: shown.read.has(f.key),
    parsed: shown.reading?.parsed?.[f.key],
  }));
}
function otherRows() {
  const label = fieldLabel(fields.find((f) => f.key === "other") ?? { key: "other", label: "Other" });
  // not read yet (or not read before Stop): one placeholder row, so the table says it is missing
  if (!shown.read.has("other")) return [{ key: "other", label, value: null, read: false }];
  return (shown.values.other || []).map((o) => ({ key: "other", label: `${label}: ${o.name}`, value: o.value, read: true }));
}

// A row: filled (data-filled; "(not on the plate)" for a field read as absent), pending ("…"
// while the reading runs) or not read (the reading stopped first).
function rowEl(row, warned) {
  const tr = document.createElement("tr");
  tr.dataset.key = row.key;
  const q = row.parsed;
  const parsed = q ? `${q.value}${q.max ? "–" + q.max : ""} ${q.unit}`.trim() : "";
  let value = row.value, cls = "";
  if (row.read) {
    tr.dataset.filled = "1";
    tr.classList.add("filled");
    if (value == null) [value, cls] = [t("plate.empty"), "empty"];
  } else if (shown.state === "reading") {
    tr.classList.add("pending");
    [value, cls] = ["…", "pending"];
  } else {
    tr.classList.add("unread");
    [value, cls] = [t("plate.notRead"), "empty"];
  }
  if (warned.has(row.key)) tr.classList.add("warn");
  for (const [i, s] of [row.label, value, parsed].entries()) {
    const td = document.createElement(i ? "td" : "th");
    td.textContent = s;
    if (i === 1 && cls) td.className = cls;
    tr.append(td);
  }
  return tr;
}

function renderTable() {
  const r = shown.reading;
  const warned = warnedFields(r?.warnings || []);
  $("#plate-table tbody").replaceChildren(...[...fieldRows(), ...otherRows()].map((row) => rowEl(row, warned)));
  // warnings come with the finished reading; while reading there are none to show yet
  $("#plate-warnings-title").hidden = $("#plate-warnings").hidden = !r;
  $("#plate-warnings").replaceChildren(...(r?.warnings?.length ? r.warnings : [t("plate.noWarnings")]).map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  const banner = $("#plate-banner");
  banner.hidden = shown.state !== "incomplete";
  banner.textContent = banner.hidden ? "" : t("plate.incomplete", { done: shown.read.size, total: fields.length });
  $("#plate").dataset.state = shown.state;
  $("#plate").hidden = false;
  updateButtons();   // Copy follows store.plateResult
}

function plateText() {
  const lines = [...fieldRows(), ...otherRows()].filter((x) => x.read && x.value != null).map((x) => `${x.label}\t${x.value}`);
  if (shown.state === "incomplete") lines.push(t("plate.incomplete", { done: shown.read.size, total: fields.length }));
  for (const w of shown.reading?.warnings || []) lines.push(`${t("plate.warnings")}: ${w}`);
  return lines.join("\n");
}

export async function copyPlate() {
  if (!shown?.reading) return;
  const text = plateText();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // older or restricted browsers: the legacy copy command from a hidden textarea
    const ta = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    if (!ok) return showNoticeRender(() => t("plate.copyFailed"));
  }
  showInfo("plate.copied");
}

// The readings log as a file (api.js download: the token header is sent).
export async function exportReadings(format) {
  try {
    const name = await download(`/api/readings?format=${format}`, `readings.${format}`);
    showInfo("plate.exported", { name });
  } catch (e) {
    showError(e);
  }
}
