// A question before something that cannot be undone (removing a photo with its reading and
// corrections): a modal <dialog> with the page's own buttons and words (window.confirm would be
// untranslated, and some embedded web views answer it without asking). Esc or Cancel says no.
import { t } from "./ui.js";

export function confirmDialog(text, okLabel) {
  const dlg = document.createElement("dialog");
  dlg.className = "confirm";
  const p = document.createElement("p");
  p.textContent = text;
  const form = document.createElement("form");
  form.method = "dialog";
  const cancel = Object.assign(document.createElement("button"), { type: "submit", value: "no", textContent: t("inv.cancel") });
  const ok = Object.assign(document.createElement("button"), { type: "submit", value: "yes", textContent: okLabel, className: "danger" });
  form.append(cancel, ok);
  dlg.append(p, form);
  document.body.append(dlg);
  const back = document.activeElement;
  dlg.showModal();
  cancel.focus();   // the safe answer is the one Enter gives
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "yes");
      dlg.remove();
      if (back?.isConnected) back.focus();
    });
  });
}
