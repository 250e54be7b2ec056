// The detail panel's fields: one input per plate field ("other" a box of "name: value" lines), the
// model's value and its confidence beside it, saved the moment it changes (change, blur or Enter:
// PUT …/fields/{key}; the model's value is kept by the server) with a visible "saved" or the error,
// and "Undo correction" (DELETE) back to the model's value. A poll never overwrites an input the
// technician is in or has changed without saving: what they typed is never lost.
import { t, fieldLabel } from "./ui.js";
import { api, describeError } from "./api.js";
import { inv, refresh, valueOf, valueText, fieldMark, pct } from "./inventory_data.js";

// "other" as text: a line per pair; back: "name: value" per line (a line without ":" is a value)
function parseOther(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const i = l.indexOf(":");
    return i < 0 ? { name: "", value: l } : { name: l.slice(0, i).trim(), value: l.slice(i + 1).trim() };
  });
}
const toText = (key, v) => valueText(key, v, "\n");
const fromText = (key, s) => (key === "other" ? parseOther(s) : s.trim() === "" ? null : s.trim());

function say(box, key, vars, kind) {
  box.textContent = t(key, vars);
  box.dataset.kind = kind;
}

async function save(row, key, input, status) {
  const text = input.value;
  if (text === input.dataset.shown || text === input.dataset.saving) return;
  input.dataset.saving = text;
  say(status, "inv.saving", {}, "busy");
  try {
    await api(`/api/inventory/photos/${row.id}/fields/${key}`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ value: fromText(key, text) }),
    });
    if (input.value === text) input.dataset.shown = text;   // typed on meanwhile: that is still unsaved
    say(status, "inv.saved", { when: new Date().toLocaleTimeString(document.documentElement.lang) }, "ok");
    await refresh().catch(() => {});
  } catch (e) {
    say(status, "inv.saveFailed", { msg: describeError(e) }, "error");   // the typed value stays in the box
  } finally {
    delete input.dataset.saving;
  }
}

async function undo(rowId, key, input, status) {
  try {
    await api(`/api/inventory/photos/${rowId}/fields/${key}`, { method: "DELETE" });
    delete input.dataset.shown;            // the model's value comes back into the box
    input.value = "";
    say(status, "inv.undone", {}, "ok");
    await refresh().catch(() => {});
  } catch (e) {
    say(status, "inv.saveFailed", { msg: describeError(e) }, "error");
  }
}

// The field inputs for `row` inside `host`; returns {update(row), pending()} for the panel.
export function fieldEditor(host, rowId) {
  const els = new Map();
  for (const f of inv.fields) {
    const wrap = document.createElement("div");
    wrap.className = "inv-field";
    wrap.dataset.key = f.key;
    const id = `inv-f-${f.key}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    const input = document.createElement(f.key === "other" ? "textarea" : "input");
    input.id = id;
    if (f.key === "other") input.rows = 3; else input.type = "text";
    input.autocomplete = "off";
    input.spellcheck = false;
    const meta = document.createElement("div");
    meta.className = "inv-fmeta";
    const model = document.createElement("span");
    const undoBtn = document.createElement("button");
    undoBtn.type = "button";
    undoBtn.className = "small";
    const status = document.createElement("span");
    status.className = "inv-saved";
    status.setAttribute("role", "status");
    meta.append(model, undoBtn, status);
    wrap.append(label, input, meta);
    host.append(wrap);
    const row = () => inv.rows.get(rowId);
    input.addEventListener("change", () => save(row(), f.key, input, status));
    input.addEventListener("keydown", (e) => {
      // Enter saves (a new line in "other" is Shift+Enter); never while an IME composes
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        save(row(), f.key, input, status);
      }
    });
    undoBtn.addEventListener("click", () => undo(rowId, f.key, input, status));
    els.set(f.key, { f, wrap, label, input, model, undoBtn, status });
  }

  function update(row) {
    for (const { f, wrap, label, input, model, undoBtn } of els.values()) {
      const m = fieldMark(row, f.key, t);
      wrap.dataset.mark = m.cls;
      label.textContent = fieldLabel(f) + (m.sym ? " " + m.sym : "");
      label.title = m.title;
      input.title = m.title;
      input.placeholder = t("inv.notOnPlate");
      const modelText = toText(f.key, row.fields?.[f.key] ?? null) || t("inv.notOnPlate");
      const conf = row.confidence?.[f.key];
      model.textContent = t(conf == null ? "inv.modelRead" : "inv.modelReadConf", { value: modelText.replace(/\n/g, "; "), pct: pct(conf) });
      undoBtn.textContent = t("inv.undo");
      undoBtn.setAttribute("aria-label", t("inv.undoAria", { field: fieldLabel(f) }));
      undoBtn.hidden = !row.corrections?.[f.key];
      const text = toText(f.key, valueOf(row, f.key));
      const typing = document.activeElement === input || input.dataset.saving !== undefined
        || (input.dataset.shown !== undefined && input.value !== input.dataset.shown);
      if (!typing) {
        input.value = text;
        input.dataset.shown = text;
      }
    }
  }

  // save what was typed and not yet saved (before "Confirm all fields")
  async function flush() {
    for (const { f, input, status } of els.values()) {
      if (input.dataset.shown !== undefined && input.value !== input.dataset.shown) await save(inv.rows.get(rowId), f.key, input, status);
    }
  }
  return { update, flush };
}
