// The engine that reads the inventory, in a small dialog: this computer's model, or a remote
// OpenAI-compatible server (its address, its token — a password box, never shown back: the server
// keeps it in memory only and GET never returns it — an optional model name and how many photos
// it reads at once). The server tries the engine before switching; its refusal is shown as it is.
import { $, t } from "./ui.js";
import { api, ApiError, describeError } from "./api.js";
import { refresh } from "./inventory_data.js";

export async function openEngine() {
  const dlg = $("#inv-engine");
  $("#inv-engine-error").hidden = true;
  $("#inv-eng-token").value = "";
  try {
    const e = await (await api("/api/inventory/engine")).json();
    const remote = e.kind === "remote";
    $("#inv-eng-local").checked = !remote;
    $("#inv-eng-remote").checked = remote;
    $("#inv-eng-url").value = e.url || "";
    $("#inv-eng-model").value = e.model || "";
    $("#inv-eng-conc").value = e.concurrency || 2;
    $("#inv-eng-token").placeholder = t(e.token_set ? "inv.eng.tokenSet" : "inv.eng.tokenNone");
  } catch (err) {
    showErr(describeError(err));
  }
  follow();
  dlg.showModal();
}

function showErr(text) {
  const box = $("#inv-engine-error");
  box.textContent = text;
  box.hidden = false;
}

// the remote engine's boxes only mean something when it is chosen
function follow() {
  const remote = $("#inv-eng-remote").checked;
  for (const el of $("#inv-eng-remote-box").querySelectorAll("input")) el.disabled = !remote;
}

async function save(e) {
  e.preventDefault();
  const remote = $("#inv-eng-remote").checked;
  const body = remote
    ? { kind: "remote", url: $("#inv-eng-url").value.trim(), token: $("#inv-eng-token").value || null,
        model: $("#inv-eng-model").value.trim() || null, concurrency: Number($("#inv-eng-conc").value) || 1 }
    : { kind: "local" };
  const go = $("#inv-eng-save");
  go.disabled = true;
  $("#inv-engine-error").hidden = true;
  $("#inv-eng-checking").hidden = !remote;
  try {
    await api("/api/inventory/engine", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    $("#inv-eng-token").value = "";
    $("#inv-engine").close();
    refresh().catch(() => {});
  } catch (err) {
    // the engine's own words (wrong address, refused token, no such model) are what to fix
    showErr(err instanceof ApiError && (err.status === 502 || err.status === 400)
      ? t("inv.eng.refused", { msg: err.message }) : describeError(err));
  } finally {
    go.disabled = false;
    $("#inv-eng-checking").hidden = true;
  }
}

export function wireEngine() {
  $("#inv-engine-open").addEventListener("click", openEngine);
  $("#inv-eng-local").addEventListener("change", follow);
  $("#inv-eng-remote").addEventListener("change", follow);
  $("#inv-engine form").addEventListener("submit", save);
  $("#inv-eng-cancel").addEventListener("click", () => $("#inv-engine").close());
}
