// glmv UI: photo → (rotate / crop on a canvas) → session on the local server → streamed answers,
// nameplate table, exports. Plain JS in native ES modules, no framework, no build step: the page is
// served as-is by `glmv serve` (assets/ui/ under /ui/) and must run offline. This module wires the
// page and starts it; the others:
//   ui.js      the language, t() over i18n.js (the strings), redrawing on a language switch
//   api.js     fetch with the token, errors as sentences, server-sent events
//   notice.js  the banner       status.js  the status bar     state.js  what modules share
//   photo.js   open / drop / paste, canvas, rotate, crop, the upload, the buttons
//   chat.js    ask, streamed answers, Stop, reasoning    progress.js  the bar while a photo is read
//   plate.js   the streamed nameplate reading    plate_table.js  its table (row by row), copy, exports
//   views.js   the tabs: one photo / the inventory    inventory.js  the inventory view (its own modules
//              are listed there)                  confirm.js  a question before removing
// The server contract — the /api routes the page calls, their bodies and errors — is described in
// runtime/app/server/routes_app.py (the route table and the /ui/ static files: runtime/app/server/app.py;
// the token and origin checks: runtime/app/server/guard.py).
import { $, applyLang, toggleLang } from "./ui.js";
import { hideNotice } from "./notice.js";
import { pollStatus } from "./status.js";
import { store } from "./state.js";
import { photo, openSample, rotate, useCrop, fullPhoto, dropSelection, updateButtons, wirePhoto } from "./photo.js";
import { ask, stop, addNote } from "./chat.js";
import { readPlate, copyPlate, exportReadings } from "./plate.js";
import { wireViews } from "./views.js";
import { wireInventory } from "./inventory.js";

function wire() {
  $("#open").addEventListener("click", () => $("#file").click());
  $("#demo-sample").addEventListener("click", openSample);
  $("#rot-left").addEventListener("click", () => rotate(-1));
  $("#rot-right").addEventListener("click", () => rotate(1));
  $("#use-crop").addEventListener("click", useCrop);
  $("#full-photo").addEventListener("click", fullPhoto);
  $("#read-plate").addEventListener("click", readPlate);
  $("#copy").addEventListener("click", copyPlate);
  $("#export-csv").addEventListener("click", () => exportReadings("csv"));
  $("#export-json").addEventListener("click", () => exportReadings("json"));
  $("#stop").addEventListener("click", stop);
  $("#notice-close").addEventListener("click", () => { hideNotice(); store.modelNotice = false; });
  $("#ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  $("#thinking").addEventListener("change", () => {
    if ($("#messages .msg.assistant")) addNote("chat.thinkingNote");
  });
  $("#lang").addEventListener("click", toggleLang);

  // Enter sends, Shift+Enter is a new line; never send while an IME is composing (Chinese input
  // uses Enter to confirm the composition).
  $("#question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      ask();
    }
  });
  // Esc anywhere: stop the running answer, else drop an unapplied crop selection
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (store.running) stop();
    else if (photo.pending) dropSelection();
  });

  wirePhoto();   // the file input, drag and drop, paste, the crop rectangle, redraw on resize
  wireInventory();
}

wire();
applyLang();
wireViews();     // after the strings: showing the inventory draws it in the current language
updateButtons();
pollStatus();
