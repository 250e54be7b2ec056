// The nameplate: read it from the current view, show the table with the rows warnings are about
// highlighted, copy it as text, export the readings log. The rows are the server's field list
// (GET /api/plate-fields: {fields: [{key, label}, …]} in runtime/tasks/plate.py's order, then
// "other"), fetched once, before the first table; labels are translated by key (ui.js fieldLabel).
import { $, t, fieldLabel, onLangChange } from "./ui.js";
import { api, ApiError } from "./api.js";
import { showError, showInfo, showNoticeRender, hideNoticeUnlessModel } from "./notice.js";
import { store } from "./state.js";
import { photo, ensureSession, updateButtons, onPhotoChanged } from "./photo.js";

let fields = null;          // [{key, label}] as the server lists them, once fetched
let fieldsRequest = null;   // that request while it runs (or once it succeeded)

function plateFields() {
  fieldsRequest ??= api("/api/plate-fields").then((r) => r.json()).then((body) => (fields = body.fields))
    .catch((e) => { fieldsRequest = null; throw e; });   // not kept: the next reading asks again
  return fieldsRequest;
}

export async function readPlate() {
  if (store.running || !photo.base) return;
  hideNoticeUnlessModel();
  const controller = new AbortController();
  const running = store.running = { controller, sid: null, bubble: null };
  updateButtons();
  const btn = $("#read-plate");
  btn.textContent = t("plate.reading");
  const fieldsReady = plateFields();       // while the photo goes up and the model reads it
  fieldsReady.catch(() => {});            // (its failure is reported below, once, not as unhandled)
  try {
    running.sid = await ensureSession(controller.signal);
    const resp = await api(`/api/sessions/${running.sid}/read-plate`, { method: "POST", signal: controller.signal });
    const result = await resp.json();
    await fieldsReady;
    store.plateResult = result;
    renderPlate(result);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) store.sessionId = null;
    showError(e);
  } finally {
    store.running = null;
    btn.textContent = t("plate.read");
    updateButtons();
  }
}

// the table shown (and what Copy copies) belongs to the previous photo
onPhotoChanged(() => {
  store.plateResult = null;
  $("#plate").hidden = true;
});
onLangChange(() => { if (store.plateResult) renderPlate(store.plateResult); });

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
function plateRows(r) {
  const rows = fields.filter((f) => f.key !== "other")
    .map((f) => ({ key: f.key, label: fieldLabel(f), value: r.fields?.[f.key] ?? null, parsed: r.parsed?.[f.key] }));
  const other = fieldLabel(fields.find((f) => f.key === "other") ?? { key: "other", label: "Other" });
  for (const o of r.fields?.other || []) rows.push({ key: "", label: `${other}: ${o.name}`, value: o.value });
  return rows;
}

function renderPlate(r) {
  const warned = warnedFields(r.warnings || []);
  const tbody = $("#plate-table tbody");
  tbody.replaceChildren();
  for (const row of plateRows(r)) {
    const tr = document.createElement("tr");
    if (warned.has(row.key)) tr.className = "warn";
    const q = row.parsed;
    const parsed = q ? `${q.value}${q.max ? "–" + q.max : ""} ${q.unit}`.trim() : "";
    for (const [i, s] of [row.label, row.value ?? t("plate.empty"), parsed].entries()) {
      const td = document.createElement(i ? "td" : "th");
      td.textContent = s;
      if (i === 1 && row.value == null) td.className = "empty";
      tr.append(td);
    }
    tbody.append(tr);
  }
  const ul = $("#plate-warnings");
  ul.replaceChildren(...(r.warnings?.length ? r.warnings : [t("plate.noWarnings")]).map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  $("#plate").hidden = false;
}

function plateText(r) {
  const lines = plateRows(r).filter((x) => x.value != null).map((x) => `${x.label}\t${x.value}`);
  for (const w of r.warnings || []) lines.push(`${t("plate.warnings")}: ${w}`);
  return lines.join("\n");
}

export async function copyPlate() {
  const text = plateText(store.plateResult);
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

// Downloads go through fetch (not a plain link) so the bearer token header is sent when needed.
export async function exportReadings(format) {
  try {
    const blob = await (await api(`/api/readings?format=${format}`)).blob();
    const name = `readings.${format}`;
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    showInfo("plate.exported", { name });
  } catch (e) {
    showError(e);
  }
}
