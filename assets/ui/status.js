// The status bar: poll /api/status — every second while the model loads, every 10 s afterwards —
// and show the model state, the hardware and model in use, the last speed, where data goes.
import { $, t, onLangChange } from "./ui.js";
import { api, ApiError } from "./api.js";
import { showError, showNoticeRender, hideNotice } from "./notice.js";
import { store } from "./state.js";

let statusFailed = false, statusTimer = 0;

export async function pollStatus() {
  clearTimeout(statusTimer);
  try {
    store.serverStatus = await (await api("/api/status")).json();
    statusFailed = false;
  } catch (e) {
    // "denied" (no or wrong token) is not "offline": the fix is a different one
    statusFailed = e instanceof ApiError && e.status === 401 ? "denied" : "offline";
    if (statusFailed === "denied") showError(e);
  }
  renderStatus();
  // a missing model stays in the banner until it is fixed: it is what the user must act on
  const serverStatus = store.serverStatus, st = serverStatus?.state;
  if (!statusFailed && (st === "no_model" || st === "error")) {
    const msg = serverStatus.message;
    showNoticeRender(() => t(st === "no_model" ? "err.noModel" : "err.modelError", { msg }), "error");
    store.modelNotice = true;
  } else if (store.modelNotice && st === "ready") {
    hideNotice();
    store.modelNotice = false;
  }
  $("#demo").hidden = !(st === "ready" && serverStatus?.model?.demo);
  statusTimer = setTimeout(pollStatus, statusFailed || st === "loading" ? 1000 : 10000);
}

export function renderStatus() {
  const s = store.serverStatus, pill = $("#state"), bar = $("#progress");
  const state = statusFailed || (s ? s.state : "loading");
  pill.dataset.state = state;
  pill.textContent = state === "loading"
    ? t("status.loading", { pct: s ? Math.round((s.progress || 0) * 100) + "%" : "" })
    : t("status." + state);
  bar.hidden = state !== "loading";
  if (s) bar.value = s.progress || 0;
  const base = (p) => (p ? String(p).split(/[\\/]/).pop() : t("status.none"));
  const gpus = s?.hardware?.gpus || [];
  $("#st-model").textContent = base(s?.model?.text);
  $("#st-model").title = s?.model?.text || "";
  $("#st-quant").textContent = s?.model?.quant || t("status.none");
  $("#st-cpu").textContent = s?.hardware?.cpu_variant || t("status.none");
  $("#st-gpu").textContent = s ? (gpus.length ? gpus.map((g) => g.description || g.name).join(", ") : t("status.noGpu")) : t("status.none");
  // which device reads, with the driver's name; the why (and any fallback) in the tooltip
  const dev = s?.device, stDev = $("#st-device");
  stDev.textContent = !dev ? t("status.none") : dev.backend === "cpu" ? "CPU"
    : `${dev.backend === "cuda" ? "CUDA" : "Vulkan"} · ${dev.device}${dev.driver ? " (" + dev.driver + ")" : ""} · `
      + t("status.deviceLayers", { n: dev.n_gpu_layers });
  stDev.title = dev ? [dev.why, ...(dev.notes || [])].join("\n") : "";
  $("#st-tps").textContent = s?.last_decode_tps ? t("status.tpsValue", { tps: s.last_decode_tps }) : t("status.none");
  // a read-only stick: say where the readings and caches go instead
  const data = $("#st-data");
  data.hidden = !s?.data_dir_note;
  data.textContent = s?.data_dir_note ? t("status.dataElsewhere", { dir: s.data_dir }) : "";
  data.title = s?.data_dir_note || "";
}

onLangChange(renderStatus);
