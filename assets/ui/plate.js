// Reading the nameplate from the current view, as the server streams it (POST
// /api/sessions/{sid}/read-plate with {"stream": true}: runtime/app/server/routes_app.py). On a CPU
// a reading takes minutes, so the page shows it as it goes: the progress bar while the photo and
// prompt are read (progress.js, as the chat's), each field in its row the moment its value is final
// (plate_table.js), a line with the fields read, the speed and the time left while the answer is
// decoded, then the finished table. Stop (chat.js stop) asks the server to stop and keeps this
// stream open for its last event, which holds the fields read so far (marked incomplete, not logged).
import { $, t, i18nEl } from "./ui.js";
import { api, ApiError, sseEvents } from "./api.js";
import { showError, hideNoticeUnlessModel } from "./notice.js";
import { store } from "./state.js";
import { photo, ensureSession, updateButtons } from "./photo.js";
import { renderStatus } from "./status.js";
import { showProgress, clearProgress, timeLeft } from "./progress.js";
import { plateFields, startTable, fillField, finishTable, partialReading, tableHasReads, hideTable } from "./plate_table.js";

export { copyPlate, exportReadings } from "./plate_table.js";

export async function readPlate() {
  if (store.running || !photo.base) return;
  hideNoticeUnlessModel();
  const controller = new AbortController();
  const running = store.running = {
    kind: "plate", controller, sid: null, bubble: null,
    onStopping: () => { setButton("plate.stopping"); setLine(i18nEl("span", "plate.stopping")); },
  };
  updateButtons();
  setButton("plate.reading");
  const live = $("#plate-live");
  try {
    await plateFields();      // the rows (fetched once), so the table can stand before any value
    startTable();
    setLine(i18nEl("span", store.sessionId ? "plate.starting" : "photo.uploading"));
    running.sid = await ensureSession(controller.signal);
    if (!running.stopping) setLine(i18nEl("span", "plate.starting"));
    const resp = await api(`/api/sessions/${running.sid}/read-plate`, {
      method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ stream: true }),
    });
    let done = null;
    for await (const ev of sseEvents(resp)) {
      if (ev.type === "progress") {          // the photo and prompt: the bar, until the answer starts
        if (!running.stopping) setLine();
        showProgress(live, ev, live.querySelector(".plate-line"));
      } else if (ev.type === "field") {
        clearProgress(live);
        fillField(ev.key, ev.value);
      } else if (ev.type === "decode") {
        clearProgress(live);
        if (!running.stopping) showDecode(ev);
      } else if (ev.type === "done") {
        done = ev;
      } else if (ev.type === "error") {
        throw new Error(t("err.stream", { msg: ev.message }));
      }
    }
    if (!done) throw new Error(t("plate.noEnd"));
    finishTable(done.reading, done.incomplete);
    if (!done.cached && done.decode_tps && store.serverStatus) {   // the status bar's "last speed"
      store.serverStatus.last_decode_tps = done.decode_tps;
      renderStatus();
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) store.sessionId = null;   // expired: re-upload next time
    // Stop's grace ran out, or the stream broke: the fields that arrived stay, marked incomplete
    if (tableHasReads()) finishTable(partialReading(), true);
    else hideTable();
    showError(e);   // (not for an abort: the user asked for it)
  } finally {
    clearProgress(live);
    setLine();
    store.running = null;
    setButton("plate.read");
    updateButtons();
  }
}

// The reading button says what runs; its key goes in data-i18n so a language switch keeps it.
function setButton(key) {
  const btn = $("#read-plate");
  btn.dataset.i18n = key;
  btn.textContent = t(key);
}

// The line under the nameplate's title while it is read (sending the photo, the decode, stopping);
// setLine() with nothing removes it.
function setLine(...nodes) {
  const live = $("#plate-live");
  let line = live.querySelector(".plate-line");
  if (!nodes.length) return line?.remove();
  if (!line) {
    line = document.createElement("p");
    line.className = "plate-line";
    live.append(line);
  }
  line.replaceChildren(...nodes);
}

// "7 of 18 fields read · 21.5 tokens/s · about 12 s left" (the time left is estimated by the
// server from the fields done so far: none before the first one)
function showDecode(ev) {
  const tps = Math.round(ev.decode_tps * 10) / 10;
  setLine(i18nEl("span", "plate.decode", { done: ev.fields_done, total: ev.fields_total, tps }), " · ", timeLeft(ev.eta_s));
}
