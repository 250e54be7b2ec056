// The page's words: the language (the system's by default, an explicit choice remembered),
// t(key, vars) over the strings in i18n.js, translatable elements, and redrawing every string
// when the language changes. Also `$`, used everywhere.
import { I18N } from "./i18n.js";

export const $ = (sel) => document.querySelector(sel);

let lang = localStorage.getItem("glmv.lang") ||
  ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");

export function t(key, vars = {}) {
  const s = (I18N[lang] && I18N[lang][key]) ?? I18N.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : ""));
}

// A nameplate field's label ({key, label} as the server lists them): the translation i18n.js has
// for "field.<key>" in this language, else the server's English label.
export function fieldLabel(field) {
  return I18N[lang]?.["field." + field.key] ?? field.label;
}

// a translatable element: applyLang re-renders it from its key and values
export function i18nEl(tag, key, vars) {
  const el = document.createElement(tag);
  el.dataset.i18n = key;
  if (vars) el.dataset.i18nVars = JSON.stringify(vars);
  el.textContent = t(key, vars);
  return el;
}

// Strings built by code are re-rendered from state rather than patched: each module registers how.
const renderers = [];
export const onLangChange = (render) => { renderers.push(render); };

export function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  // data-i18n-vars holds the values of a string built at run time (token counts and the like)
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n, el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {});
  }
  for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of document.querySelectorAll("[data-i18n-ph]")) el.placeholder = t(el.dataset.i18nPh);
  for (const render of renderers) render();
}

export function toggleLang() {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("glmv.lang", lang);
  applyLang();
}

// Put `nodes` in `parent` in this order, moving only those out of place: an element that stays
// keeps its keyboard focus (replaceChildren would take every node out, and the focus with it).
export function placeChildren(parent, nodes) {
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}
