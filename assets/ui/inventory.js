// The inventory view: many photos read one after another by the server's queue while the
// technician checks the table (the API: runtime/app/server/routes_inventory.py). This module wires
// it and keeps it current; the parts:
//   inventory_data.js   the rows merged by id, the poll, actions    inventory_images.js  thumbnails
//   inventory_add.js    file dialog, dropped files and folders, the uploads
//   inventory_queue.js  the queue, its progress, Pause           inventory_table.js  the table
//   inventory_detail.js one photo: zoomable photo, fields (inventory_fields.js), actions
//   inventory_engine.js the engine dialog                        views.js  the tabs
// Polling: every second while the queue reads, every few seconds when it is quiet, not at all
// while the inventory is not shown or the window is hidden.
import { $, t } from "./ui.js";
import { api, download } from "./api.js";
import { showError, showInfo, showNoticeRender } from "./notice.js";
import { inv, refresh, busy } from "./inventory_data.js";
import { addFiles, droppedFiles, wireAdd } from "./inventory_add.js";
import { wireQueue, renderQueue } from "./inventory_queue.js";
import { wireTable, renderTable, onOpenRow } from "./inventory_table.js";
import { wireDetail, openDetail } from "./inventory_detail.js";
import { wireEngine } from "./inventory_engine.js";
import { onViewChange, currentView } from "./views.js";

const FAST_MS = 1000, SLOW_MS = 4000, OFFLINE_MS = 3000;
let timer = 0;

async function tick() {
  clearTimeout(timer);
  if (currentView() !== "inventory" || document.hidden) return;
  try {
    await refresh();
  } catch { /* said in the queue's line ("server not reachable"); tried again below */ }
  if (currentView() !== "inventory") return;
  timer = setTimeout(tick, inv.offline ? OFFLINE_MS : busy() || $("#inv-adding").dataset.running ? FAST_MS : SLOW_MS);
}

// Downloads (api.js download), saved under the server's name for them.
async function exportAs(format) {
  try {
    const name = await download(`/api/inventory/export?format=${format}`, `inventory.${format}`);
    showInfo("plate.exported", { name });
  } catch (e) {
    showError(e);
  }
}

// The folder (table, photos, JSON) is written on the server's side: the banner keeps its path
// until dismissed, the technician has to find it.
async function exportFolder() {
  const b = $("#inv-export-folder");
  b.disabled = true;
  try {
    const { path } = await (await api("/api/inventory/export-folder", { method: "POST" })).json();
    showNoticeRender(() => t("inv.folderWritten", { path }), "info");
  } catch (e) {
    showError(e);
  } finally {
    b.disabled = false;
  }
}

// Files and folders dropped while the inventory is shown are added to it, not opened as the one
// photo: taken at the window, before photo.js's own drop handler on the document sees them.
function wireDrop() {
  window.addEventListener("drop", (e) => {
    if (currentView() !== "inventory") return;
    e.preventDefault();
    e.stopPropagation();
    droppedFiles(e.dataTransfer).then(addFiles).catch(showError);
    setTimeout(tick, 300);
    // photo.js counts drag enters and leaves to show its overlay; this drop never reached it
    for (let i = 0; i < 64 && document.body.classList.contains("dragging"); i++) document.dispatchEvent(new Event("dragleave"));
  }, true);
}

export function wireInventory() {
  wireAdd();
  wireQueue();
  wireTable();
  wireDetail();
  wireEngine();
  wireDrop();
  onOpenRow(openDetail);
  $("#inv-export-csv").addEventListener("click", () => exportAs("csv"));
  $("#inv-export-xlsx").addEventListener("click", () => exportAs("xlsx"));
  $("#inv-export-folder").addEventListener("click", exportFolder);
  $("#inv-file").addEventListener("change", () => setTimeout(tick, 300));
  onViewChange((v) => { if (v === "inventory") { renderQueue(); renderTable(true); tick(); } });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  // an action (pause, an upload…) may start the queue: look again soon instead of in 4 s
  document.addEventListener("click", (e) => {
    if (currentView() === "inventory" && e.target.closest("#inventory button")) setTimeout(tick, 300);
  });
}
