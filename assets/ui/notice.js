// The notice banner. It stores how to render its text (not the text) so a language switch redraws it.
import { $, t, onLangChange } from "./ui.js";
import { ApiError, describeError } from "./api.js";
import { store } from "./state.js";

const notice = { render: null, kind: "error" };

export function showNoticeRender(render, kind = "error") {
  Object.assign(notice, { render, kind });
  $("#notice-text").textContent = render();
  $("#notice").dataset.kind = kind;
  $("#notice").hidden = false;
}

// ApiErrors are described per status; anything else (a stream error, no photo) is already a sentence
export const showError = (e) => {
  if (e?.name !== "AbortError") showNoticeRender(() => (e instanceof ApiError ? describeError(e) : String(e.message || e)));
};

// confirmations ("copied", "saved") go away by themselves; errors stay until dismissed
let infoTimer = 0;
export const showInfo = (key, vars) => {
  showNoticeRender(() => t(key, vars), "info");
  clearTimeout(infoTimer);
  const mine = notice.render;
  infoTimer = setTimeout(() => { if (notice.render === mine) hideNotice(); }, 4000);
};

export function hideNotice() { notice.render = null; $("#notice").hidden = true; }

// a missing model stays in the banner until it is fixed: starting a request does not clear it
export function hideNoticeUnlessModel() { if (!store.modelNotice) hideNotice(); }

onLangChange(() => { if (notice.render) showNoticeRender(notice.render, notice.kind); });
