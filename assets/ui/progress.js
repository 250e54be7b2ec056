// The progress bar while the server reads the photo and the prompt (minutes on a laptop CPU): the
// phase, a bar, and the time left as this machine measured it on earlier photos ("estimating…" the
// first time). One bar for both faces that wait on it: a chat reply (chat.js) and the nameplate
// reading (plate.js); the events are the server's {"type": "progress", phase, done, total,
// fraction, eta_s} (runtime/engine/progress.py).
import { i18nEl } from "./ui.js";

// Show (or update) the bar inside `host`, before `before` (null: at the end) when it is created.
// The bar follows the whole reading when the server has an estimate, else the current phase.
export function showProgress(host, ev, before = null) {
  let box = host.querySelector(":scope > .progress");
  if (!box) {
    box = document.createElement("div");
    box.className = "progress";
    box.setAttribute("role", "progressbar");
    box.setAttribute("aria-valuemin", "0");
    box.setAttribute("aria-valuemax", "100");
    const label = document.createElement("div");
    label.className = "progress-label";
    const track = document.createElement("div");
    track.className = "progress-track";
    track.append(document.createElement("div"));
    box.append(label, track);
    host.insertBefore(box, before);
  }
  const frac = ev.fraction ?? (ev.total > 0 ? ev.done / ev.total : 0);
  const pct = Math.max(0, Math.min(100, Math.round(frac * 100)));
  box.dataset.phase = ev.phase;
  box.setAttribute("aria-valuenow", String(pct));
  box.querySelector(".progress-track > div").style.width = pct + "%";
  const label = box.querySelector(".progress-label");
  label.replaceChildren(i18nEl("span", "progress." + ev.phase), " — ", timeLeft(ev.eta_s));
  box.setAttribute("aria-label", label.textContent);
}

export function clearProgress(host) {
  host.querySelector(":scope > .progress")?.remove();
}

// "about N s left", or "estimating the time…" while there is no estimate yet (a translatable span)
export function timeLeft(etaS) {
  return etaS == null ? i18nEl("span", "progress.estimating")
    : i18nEl("span", "progress.left", { s: Math.max(1, Math.round(etaS)) });
}
