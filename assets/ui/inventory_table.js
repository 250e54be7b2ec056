// The inventory's table: one row per photo (thumbnail and name, state, then one column per plate
// field, labels from ui.js fieldLabel as in the single-photo table). A field the model was unsure
// of and nobody checked is marked ⚑ (colour, symbol and a tooltip with the confidence — never colour
// alone), a corrected one ✎ (the tooltip: the model's value and when it was changed), an accepted one
// ✓; an error row says its error across the field columns. Sorted by clicking a column header,
// filtered (all / not yet checked / flagged / errors / queued); a row opens the detail panel.
// Rows are redrawn only when their revision changes and moved, not rebuilt, so the focus stays.
import { $, t, i18nEl, fieldLabel, onLangChange, placeChildren } from "./ui.js";
import { inv, act, onInventory, valueOf, valueText, fieldMark } from "./inventory_data.js";
import { thumbImg, forgetThumb } from "./inventory_images.js";

const FILTERS = {
  all: () => true,
  unchecked: (r) => r.state === "done" && r.unchecked.length > 0,
  flagged: (r) => r.flagged.length > 0,
  errors: (r) => r.state === "error",
  queued: (r) => r.state === "queued" || r.state === "reading",
};
const view = { filter: "all", sort: null, dir: 1 };   // sort: null (the queue's order), "name", "state" or a field key
let drawn = new Map();       // id → {tr, key}
let openRow = () => {};
export const onOpenRow = (fn) => { openRow = fn; };

// The ids the table shows, in its order (the detail panel's previous / next follow it).
export function visibleIds() {
  const rows = inv.ids.map((id) => inv.rows.get(id)).filter((r) => r && FILTERS[view.filter](r));
  if (view.sort) {
    const key = (r) => view.sort === "name" ? r.name : view.sort === "state" ? t("inv.state." + r.state)
      : valueText(view.sort, valueOf(r, view.sort));
    // empty values last whichever way; numbers inside text compare as numbers ("9 A" < "10 A")
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (!x !== !y) return x ? -1 : 1;
      return view.dir * x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" });
    });
  }
  return rows.map((r) => r.id);
}

function cell(text, cls = "", title = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (title) td.title = title;
  return td;
}

function rowEl(row) {
  const tr = document.createElement("tr");
  tr.dataset.id = row.id;
  tr.dataset.state = row.state;
  const name = document.createElement("td");
  name.className = "inv-name";
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link";
  open.textContent = row.name;
  open.title = t("inv.openRow", { name: row.name });
  const box = document.createElement("div");   // the cell itself stays a table cell (its borders line up)
  box.className = "inv-namebox";
  box.append(thumbImg(row.id, row.width != null), open);
  name.append(box);
  const state = cell(t("inv.state." + row.state), "inv-state");
  if (row.state === "error" || row.state === "skipped") {
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = t("inv.requeue");
    again.setAttribute("aria-label", t("inv.requeueAria", { name: row.name }));
    again.addEventListener("click", () => act(`/api/inventory/photos/${row.id}/requeue`));
    // a file the server could not decode cannot be read again: only those it kept a copy of
    if (row.width != null) state.append(" ", again);
  }
  tr.append(name, state);
  if (row.state === "error") {
    // the sentence wraps under the first columns (the table itself is as wide as its fields)
    const td = cell("", "inv-error", row.error || "");
    td.colSpan = inv.fields.length;
    td.append(Object.assign(document.createElement("div"), { className: "inv-errtext", textContent: row.error || "" }));
    tr.append(td);
    return tr;
  }
  for (const f of inv.fields) {
    if (!row.fields) { tr.append(cell(row.state === "skipped" ? "" : "…", "empty")); continue; }
    const text = valueText(f.key, valueOf(row, f.key));
    const m = fieldMark(row, f.key, t);
    const td = cell(text || "—", `${m.cls}${text ? "" : " empty"}`, m.title);
    if (m.sym) td.prepend(Object.assign(document.createElement("span"), { className: "mark", textContent: m.sym + " " }));
    td.dataset.key = f.key;
    tr.append(td);
  }
  return tr;
}

function renderHead() {
  const cols = [{ key: "name", label: t("inv.colPhoto") }, { key: "state", label: t("inv.colState") },
                ...inv.fields.map((f) => ({ key: f.key, label: fieldLabel(f) }))];
  const tr = document.createElement("tr");
  for (const c of cols) {
    const th = document.createElement("th");
    th.scope = "col";
    th.dataset.key = c.key;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "sort";
    const on = view.sort === c.key;
    b.textContent = c.label + (on ? (view.dir > 0 ? " ▲" : " ▼") : "");
    b.title = t("inv.sortBy", { col: c.label });
    b.addEventListener("click", () => sortBy(c.key));
    th.setAttribute("aria-sort", on ? (view.dir > 0 ? "ascending" : "descending") : "none");
    th.append(b);
    tr.append(th);
  }
  $("#inv-table thead").replaceChildren(tr);
}

// a header click sorts by that column, again the other way, a third time back to the queue's order
function sortBy(key) {
  if (view.sort !== key) Object.assign(view, { sort: key, dir: 1 });
  else if (view.dir > 0) view.dir = -1;
  else Object.assign(view, { sort: null, dir: 1 });
  renderTable(true);
  $(`#inv-table th[data-key="${CSS.escape(key)}"] button`)?.focus();
}

function renderFilter() {
  const sel = $("#inv-filter");
  const rows = [...inv.rows.values()];
  const opts = Object.keys(FILTERS).map((k) => {
    const o = document.createElement("option");
    o.value = k;
    o.textContent = t("inv.filter." + k, { n: rows.filter(FILTERS[k]).length });
    return o;
  });
  sel.replaceChildren(...opts);
  sel.value = view.filter;
}

export function renderTable(headToo = false) {
  if (headToo || $("#inv-table thead tr")?.children.length !== inv.fields.length + 2) renderHead();
  renderFilter();
  const ids = visibleIds();
  const lang = document.documentElement.lang;
  const next = new Map();
  const trs = ids.map((id) => {
    const row = inv.rows.get(id), key = `${row.rev}|${row.state}|${lang}|${inv.fields.length}`;
    let d = drawn.get(id);
    if (!d || d.key !== key) {
      const tr = rowEl(row);
      if (d && d.tr.contains(document.activeElement)) {
        d.tr.replaceWith(tr);    // the same row, newer: the focus goes to its name
        tr.querySelector(".inv-name button").focus();
      }
      d = { tr, key };
    }
    next.set(id, d);
    return d.tr;
  });
  for (const id of drawn.keys()) if (!inv.rows.has(id)) forgetThumb(id);
  drawn = next;
  placeChildren($("#inv-table tbody"), trs);
  $("#inv-none").hidden = trs.length > 0;
  $("#inv-none").textContent = t(inv.rows.size ? "inv.noneFiltered" : "inv.noneYet");
}

export function wireTable() {
  $("#inv-filter").addEventListener("change", (e) => { view.filter = e.target.value; renderTable(); });
  // a click anywhere on a row opens it (its name is the keyboard's way in); not on its buttons
  $("#inv-table tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (!tr || (e.target.closest("button") && !e.target.closest(".inv-name button"))) return;
    openRow(Number(tr.dataset.id));
  });
  onInventory(() => renderTable());
  onLangChange(() => renderTable(true));
}
