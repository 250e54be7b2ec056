// The photo: open, drop, paste or the demo's sample; the canvas view with rotate and crop; the
// upload of exactly the current view as the server session's image; the buttons that follow it.
// The source image is drawn once per rotation into `photo.base` (an offscreen canvas, capped at
// MAX_SIDE); a crop is a rectangle in base pixels. What we upload is exactly the current view.
import { $, t, onLangChange } from "./ui.js";
import { api } from "./api.js";
import { showError, showNoticeRender, hideNotice } from "./notice.js";
import { store } from "./state.js";

const MAX_SIDE = 4096;        // the server scales to ~0.8 MP anyway; bigger uploads only cost time
const PNG_MAX_PIXELS = 4e6;   // lossless PNG for screenshots, but not so big it hits the body limit
// photos the model reads that a browser cannot show (by type or name): shown through the server
const NOT_SHOWN = /image\/(heic|heif|tiff)|\.(heic|heif|tiff?)$/i;

const canvas = $("#canvas"), ctx = canvas.getContext("2d");
export const photo = { name: "", type: "", img: null, rot: 0, base: null, crop: null, pending: null };
let view = null;        // how the view maps to the canvas: {x, y, w, h (base px), s (css px per base px), ox, oy}

// what else follows a new view (the conversation notes it, the previous photo's table goes)
const changeListeners = [];
export const onPhotoChanged = (fn) => { changeListeners.push(fn); };

async function loadFile(file, converted = false) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) return showNoticeRender(() => t("photo.notImage"));
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.src = url;
  try {
    await img.decode();   // browsers apply the EXIF orientation here, so phone photos stand upright
  } catch {
    URL.revokeObjectURL(url);
    const name = file.name;
    if (converted || !NOT_SHOWN.test(`${file.type} ${name}`)) return showNoticeRender(() => t("photo.unreadable", { name }));
    // a format the browser cannot show (an iPhone's HEIC, a TIFF): the server reads it as the model
    // would and sends it back as a JPEG — or says, in the reading's own words, what is wrong with it
    try {
      const form = new FormData();
      form.append("photo", file, name || "photo");
      const jpeg = await (await api("/api/photo-view", { method: "POST", body: form })).blob();
      return await loadFile(new File([jpeg], name || "photo.jpg", { type: "image/jpeg" }), true);
    } catch (e) {
      return showError(e);
    }
  }
  URL.revokeObjectURL(url);
  Object.assign(photo, { name: file.name || "pasted.png", type: file.type, img, rot: 0 });
  hideNotice();
  rebuildBase();
  photoChanged();
}

// A photo that is not a file the user chose (an inventory photo to chat about): opened exactly as
// one; the name may carry a folder ("room2/pump.jpg").
export async function openBlob(blob, name) {
  await loadFile(new File([blob], name.split("/").pop(), { type: blob.type || "image/jpeg" }));
}

// The demo model's sample plate, fetched from the server and opened like a chosen file.
export async function openSample() {
  try {
    const res = await api("/api/sample");
    const name = (res.headers.get("Content-Disposition") || "").match(/filename="?([^";]+)/)?.[1] || "sample.jpg";
    await loadFile(new File([await res.blob()], name, { type: "image/jpeg" }));
  } catch (e) {
    showError(e);
  }
}

function rebuildBase() {
  const { img, rot } = photo;
  const scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
  const w = Math.round(img.naturalWidth * scale), h = Math.round(img.naturalHeight * scale);
  const c = document.createElement("canvas");
  [c.width, c.height] = rot % 2 ? [h, w] : [w, h];
  const g = c.getContext("2d");
  g.translate(c.width / 2, c.height / 2);
  g.rotate((rot * Math.PI) / 2);
  g.drawImage(img, -w / 2, -h / 2, w, h);
  Object.assign(photo, { base: c, crop: null, pending: null });
}

export function rotate(dir) {
  if (!photo.img) return;
  photo.rot = (photo.rot + dir + 4) % 4;
  rebuildBase();        // a crop drawn on the old orientation would no longer mean the same region
  photoChanged();
}

// The conversation belongs to one image on the server: a different view starts a new one.
function photoChanged() {
  for (const fn of changeListeners) fn();
  store.sessionId = null;
  draw();
  renderPhotoInfo();
  updateButtons();
}

function renderPhotoInfo() {
  const b = photo.base;
  $("#photo-info").textContent = !b ? "" : photo.crop
    ? t("photo.infoCrop", { name: photo.name, w: Math.round(photo.crop.w), h: Math.round(photo.crop.h) })
    : t("photo.info", { name: photo.name, w: b.width, h: b.height });
  if (b) $("#photo-info").textContent += " — " + t("photo.cropHint");
}
onLangChange(renderPhotoInfo);

// Draw the view fitted into the canvas at device resolution (sharp text on high-DPI screens).
function draw() {
  const dpr = window.devicePixelRatio || 1;
  const cw = canvas.clientWidth, ch = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(cw * dpr));
  canvas.height = Math.max(1, Math.round(ch * dpr));
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cw, ch);
  $("#stage-hint").hidden = !!photo.base;
  if (!photo.base) { view = null; return; }
  const r = photo.crop || { x: 0, y: 0, w: photo.base.width, h: photo.base.height };
  const s = Math.min(cw / r.w, ch / r.h);
  view = { ...r, s, ox: (cw - r.w * s) / 2, oy: (ch - r.h * s) / 2 };
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(photo.base, r.x, r.y, r.w, r.h, view.ox, view.oy, r.w * s, r.h * s);
  const p = photo.pending;
  if (p) {
    // dim everything outside the selection, outline the selection
    const [px, py, pw, ph] = [view.ox + (p.x - r.x) * s, view.oy + (p.y - r.y) * s, p.w * s, p.h * s];
    ctx.fillStyle = "rgba(0,0,0,.45)";
    ctx.beginPath();
    ctx.rect(0, 0, cw, ch);
    ctx.rect(px, py, pw, ph);
    ctx.fill("evenodd");
    ctx.strokeStyle = "#ff9800";
    ctx.lineWidth = 2;
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(px, py, pw, ph);
    ctx.setLineDash([]);
  }
}

// canvas (CSS px) → base pixels, clamped to the current view
function toBase(ev) {
  const rect = canvas.getBoundingClientRect();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  return {
    x: clamp(view.x + (ev.clientX - rect.left - view.ox) / view.s, view.x, view.x + view.w),
    y: clamp(view.y + (ev.clientY - rect.top - view.oy) / view.s, view.y, view.y + view.h),
  };
}

export function useCrop() {
  const p = photo.pending;
  if (!p) return;
  photo.crop = { x: Math.round(p.x), y: Math.round(p.y), w: Math.round(p.w), h: Math.round(p.h) };
  photo.pending = null;
  photoChanged();
}
export function fullPhoto() {
  photo.crop = photo.pending = null;
  photoChanged();
}
// Esc with no request running: drop a crop selection that was not applied
export function dropSelection() {
  if (!photo.pending) return;
  photo.pending = null;
  draw();
  updateButtons();
}

// The upload is made from the canvas, so rotation and crop are already applied.
function viewBlob() {
  const r = photo.crop || { x: 0, y: 0, w: photo.base.width, h: photo.base.height };
  const c = document.createElement("canvas");
  [c.width, c.height] = [r.w, r.h];
  c.getContext("2d").drawImage(photo.base, r.x, r.y, r.w, r.h, 0, 0, r.w, r.h);
  const png = photo.type === "image/png" && r.w * r.h <= PNG_MAX_PIXELS;
  return new Promise((res) => c.toBlob(res, png ? "image/png" : "image/jpeg", 0.92))
    .then((blob) => ({ blob, name: photo.name.replace(/\.[^.]*$/, "") + (photo.crop ? "-crop" : "") + (png ? ".png" : ".jpg") }));
}

// The server session for the current view: uploaded before the first question (or reading) on it.
export async function ensureSession(signal) {
  if (store.sessionId) return store.sessionId;
  if (!photo.base) throw new Error(t("chat.needPhoto"));
  if (store.running?.bubble) store.running.bubble.querySelector(".text").textContent = t("photo.uploading");
  const { blob, name } = await viewBlob();
  const form = new FormData();
  form.append("photo", blob, name);
  form.append("thinking", $("#thinking").checked ? "1" : "0");
  const body = await (await api("/api/sessions", { method: "POST", body: form, signal })).json();
  store.sessionId = body.session_id;
  return store.sessionId;
}

export function updateButtons() {
  const has = !!photo.base, busy = !!store.running;
  $("#rot-left").disabled = $("#rot-right").disabled = !has || busy;
  $("#use-crop").disabled = !photo.pending || busy;
  $("#full-photo").disabled = !photo.crop || busy;
  $("#read-plate").disabled = !has || busy;
  $("#send").disabled = busy;
  $("#stop").disabled = !busy || !!store.running.stopping;   // pressed once: the stop is under way
  $("#copy").disabled = !store.plateResult;                    // Copy copies a finished reading
  $("#open").disabled = busy;
  document.body.dataset.busy = busy ? "1" : "";
}

// The ways a photo comes in besides the Open button, and drawing a crop rectangle on the canvas.
export function wirePhoto() {
  $("#file").addEventListener("change", (e) => { loadFile(e.target.files[0]); e.target.value = ""; });

  let dragFrom = null;
  canvas.addEventListener("pointerdown", (ev) => {
    if (!view || ev.button !== 0) return;
    canvas.setPointerCapture(ev.pointerId);
    dragFrom = toBase(ev);
    photo.pending = null;
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!dragFrom) return;
    const p = toBase(ev);
    photo.pending = { x: Math.min(p.x, dragFrom.x), y: Math.min(p.y, dragFrom.y),
                      w: Math.abs(p.x - dragFrom.x), h: Math.abs(p.y - dragFrom.y) };
    draw();
  });
  canvas.addEventListener("pointerup", () => {
    dragFrom = null;
    const p = photo.pending;
    if (p && (p.w < 8 || p.h < 8)) photo.pending = null;   // a click, not a selection
    draw();
    updateButtons();
  });

  // drag and drop anywhere on the window; paste an image from the clipboard
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); if (++depth) document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; document.body.classList.remove("dragging"); } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    if (!store.running) loadFile(e.dataTransfer?.files?.[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item || store.running) return;   // plain text pastes into the ask box as usual
    e.preventDefault();
    loadFile(item.getAsFile());
  });

  // redraw on layout or devicePixelRatio changes (zooming fires resize)
  new ResizeObserver(() => draw()).observe(canvas);
  window.addEventListener("resize", draw);
}
