// The two views of the left pane: one photo (open, crop, ask, read its plate) and the inventory
// (many photos read by a queue). Tabs in the toolbar switch them; the chat on the right stays in
// both. The choice is remembered. Other modules are told, so the inventory polls only when seen.
import { $ } from "./ui.js";

const listeners = [];
export const onViewChange = (fn) => { listeners.push(fn); };
export const currentView = () => document.querySelector("main").dataset.view || "single";

export function showView(name) {
  const main = document.querySelector("main");
  main.dataset.view = name;
  for (const tab of document.querySelectorAll(".view-tabs [role=tab]")) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
  }
  $("#inventory").hidden = name !== "inventory";
  localStorage.setItem("glmv.view", name);
  for (const fn of listeners) fn(name);
}

export function wireViews() {
  const tabs = [...document.querySelectorAll(".view-tabs [role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
    // the tab pattern: arrow keys move between tabs
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const next = tabs[(tabs.indexOf(tab) + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      showView(next.dataset.view);
      next.focus();
    });
  }
  showView(localStorage.getItem("glmv.view") === "inventory" ? "inventory" : "single");
}
