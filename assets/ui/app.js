// glmv UI: photo → (rotate / crop on a canvas) → session on the local server → streamed answers,
// nameplate table, exports. Plain JS, no framework, no build step: the page is served as-is by
// `glmv serve` and must run offline. The server contract is described in runtime/app/server/app.py.
"use strict";

const $ = (sel) => document.querySelector(sel);
const FIELDS = ["manufacturer", "model", "serial_number", "type", "year", "rated_voltage", "current", "power",
  "frequency", "phases", "speed", "power_factor", "efficiency", "ip_rating", "insulation_class", "duty", "standard"];
const MAX_SIDE = 4096;        // the server scales to ~0.8 MP anyway; bigger uploads only cost time
const PNG_MAX_PIXELS = 4e6;   // lossless PNG for screenshots, but not so big it hits the body limit

// ---------------------------------------------------------------------------------------------
// i18n: default to the system language, remember an explicit choice.
let lang = localStorage.getItem("glmv.lang") ||
  ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");

function t(key, vars = {}) {
  const s = (I18N[lang] && I18N[lang][key]) ?? I18N.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : ""));
}

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  // data-i18n-vars holds the values of a string built at run time (token counts and the like)
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n, el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {});
  }
  for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of document.querySelectorAll("[data-i18n-ph]")) el.placeholder = t(el.dataset.i18nPh);
  // strings built by code are re-rendered from state rather than patched
  renderStatus();
  renderPhotoInfo();
  if (plateResult) renderPlate(plateResult);
  if (notice.render) showNoticeRender(notice.render, notice.kind);
}

// ---------------------------------------------------------------------------------------------
// API access. A bearer token (needed when the server listens beyond loopback) arrives once in
// ?token=…; keep it for this tab only and drop it from the address bar so it is not bookmarked.
const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("glmv.token", params.get("token"));
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
}
function authHeaders(extra = {}) {
  const tok = sessionStorage.getItem("glmv.token");
  return tok ? { ...extra, Authorization: "Bearer " + tok } : extra;
}

class ApiError extends Error {
  constructor(status, message, type, retryAfter) {
    super(message);
    Object.assign(this, { status, type, retryAfter });
  }
}

async function api(path, opts = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...opts, headers: authHeaders(opts.headers) });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, String(e.message || e), "network");
  }
  if (!resp.ok) {
    let msg = resp.statusText, type = "";
    try {
      const body = await resp.json();
      msg = body.error?.message ?? msg;
      type = body.error?.type ?? "";
    } catch { /* not JSON: keep the status text */ }
    throw new ApiError(resp.status, msg, type, resp.headers.get("Retry-After"));
  }
  return resp;
}

// One sentence for the user per server error; the server's own message is kept (it is specific:
// which limit, which folders to put the GGUF files in).
function describeError(e) {
  if (!(e instanceof ApiError)) return t("err.server", { msg: e.message || e });
  switch (e.status) {
    case 0: return t("err.network");
    case 400: return e.type === "invalid_image" ? t("err.badPhoto", { msg: e.message }) : t("err.badRequest", { msg: e.message });
    case 401: return t("err.token");
    case 403: return t("err.origin", { msg: e.message });
    case 404: return t("err.expired");
    case 409: return t("err.conflict");
    case 413: return t("err.tooLarge", { msg: e.message });
    case 429: return t("err.busy", { s: e.retryAfter || 5 });
    case 503:
      if (serverStatus?.state === "loading") return t("err.loading");
      if (serverStatus?.state === "error") return t("err.modelError", { msg: e.message });
      return t("err.noModel", { msg: e.message });
    default: return t("err.server", { msg: e.message });
  }
}

// ---------------------------------------------------------------------------------------------
// Notice banner. It stores how to render its text (not the text) so a language switch redraws it.
const notice = { render: null, kind: "error" };
function showNoticeRender(render, kind = "error") {
  Object.assign(notice, { render, kind });
  $("#notice-text").textContent = render();
  $("#notice").dataset.kind = kind;
  $("#notice").hidden = false;
}
// ApiErrors are described per status; anything else (a stream error, no photo) is already a sentence
const showError = (e) => {
  if (e?.name !== "AbortError") showNoticeRender(() => (e instanceof ApiError ? describeError(e) : String(e.message || e)));
};
// confirmations ("copied", "saved") go away by themselves; errors stay until dismissed
let infoTimer = 0;
const showInfo = (key, vars) => {
  showNoticeRender(() => t(key, vars), "info");
  clearTimeout(infoTimer);
  const mine = notice.render;
  infoTimer = setTimeout(() => { if (notice.render === mine) hideNotice(); }, 4000);
};
function hideNotice() { notice.render = null; $("#notice").hidden = true; }

// ---------------------------------------------------------------------------------------------
// Status bar: poll /api/status — every second while the model loads, every 10 s afterwards.
let serverStatus = null, statusFailed = false, statusTimer = 0;
let modelNotice = false;   // the banner currently shows the no-model / model-error message

async function pollStatus() {
  clearTimeout(statusTimer);
  try {
    serverStatus = await (await api("/api/status")).json();
    statusFailed = false;
  } catch (e) {
    // "denied" (no or wrong token) is not "offline": the fix is a different one
    statusFailed = e instanceof ApiError && e.status === 401 ? "denied" : "offline";
    if (statusFailed === "denied") showError(e);
  }
  renderStatus();
  // a missing model stays in the banner until it is fixed: it is what the user must act on
  const st = serverStatus?.state;
  if (!statusFailed && (st === "no_model" || st === "error")) {
    const msg = serverStatus.message;
    showNoticeRender(() => t(st === "no_model" ? "err.noModel" : "err.modelError", { msg }), "error");
    modelNotice = true;
  } else if (modelNotice && st === "ready") {
    hideNotice();
    modelNotice = false;
  }
  $("#demo").hidden = !(st === "ready" && serverStatus?.model?.demo);
  statusTimer = setTimeout(pollStatus, statusFailed || st === "loading" ? 1000 : 10000);
}

function renderStatus() {
  const s = serverStatus, pill = $("#state"), bar = $("#progress");
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
  $("#st-tps").textContent = s?.last_decode_tps ? t("status.tpsValue", { tps: s.last_decode_tps }) : t("status.none");
  // a read-only stick: say where the readings and caches go instead
  const data = $("#st-data");
  data.hidden = !s?.data_dir_note;
  data.textContent = s?.data_dir_note ? t("status.dataElsewhere", { dir: s.data_dir }) : "";
  data.title = s?.data_dir_note || "";
}

// ---------------------------------------------------------------------------------------------
// Photo: the source image is drawn once per rotation into `base` (an offscreen canvas, capped at
// MAX_SIDE); a crop is a rectangle in base pixels. What we upload is exactly the current view.
const canvas = $("#canvas"), ctx = canvas.getContext("2d");
const photo = { name: "", type: "", img: null, rot: 0, base: null, crop: null, pending: null };
let view = null;        // how the view maps to the canvas: {x, y, w, h (base px), s (css px per base px), ox, oy}
let sessionId = null;   // server session for the current view; null = upload before the next question

async function loadFile(file) {
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
    return showNoticeRender(() => t("photo.unreadable", { name }));
  }
  URL.revokeObjectURL(url);
  Object.assign(photo, { name: file.name || "pasted.png", type: file.type, img, rot: 0 });
  hideNotice();
  rebuildBase();
  photoChanged();
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

function rotate(dir) {
  if (!photo.img) return;
  photo.rot = (photo.rot + dir + 4) % 4;
  rebuildBase();        // a crop drawn on the old orientation would no longer mean the same region
  photoChanged();
}

// The conversation belongs to one image on the server: a different view starts a new one.
function photoChanged() {
  if (sessionId || $("#messages .msg:not(.note)")) addNote("photo.changed");
  sessionId = null;
  // the nameplate shown (and what Copy copies) belongs to the previous photo
  plateResult = null;
  $("#plate").hidden = true;
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

function useCrop() {
  const p = photo.pending;
  if (!p) return;
  photo.crop = { x: Math.round(p.x), y: Math.round(p.y), w: Math.round(p.w), h: Math.round(p.h) };
  photo.pending = null;
  photoChanged();
}
function fullPhoto() {
  photo.crop = photo.pending = null;
  photoChanged();
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

async function ensureSession(signal) {
  if (sessionId) return sessionId;
  if (!photo.base) throw new Error(t("chat.needPhoto"));
  setBusyText(t("photo.uploading"));
  const { blob, name } = await viewBlob();
  const form = new FormData();
  form.append("photo", blob, name);
  form.append("thinking", $("#thinking").checked ? "1" : "0");
  const body = await (await api("/api/sessions", { method: "POST", body: form, signal })).json();
  sessionId = body.session_id;
  return sessionId;
}

// ---------------------------------------------------------------------------------------------
// Conversation. One request runs at a time (the server runs one generation at a time anyway).
let running = null;     // {controller, sid, bubble}

function addNote(key) {
  const p = document.createElement("p");
  p.className = "msg note";
  p.dataset.i18n = key;   // re-translated by applyLang
  p.textContent = t(key);
  appendMessage(p);
}
function appendMessage(el) {
  $("#chat-empty")?.remove();
  const box = $("#messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.append(el);
  if (atBottom || el.classList.contains("user")) box.scrollTop = box.scrollHeight;
}
function bubble(kind, text = "") {
  const div = document.createElement("div");
  div.className = "msg " + kind;
  const who = document.createElement("div");
  who.className = "who";
  who.dataset.i18n = kind === "user" ? "chat.you" : "chat.assistant";
  who.textContent = t(who.dataset.i18n);
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  appendMessage(div);
  return div;
}
function followScroll() {
  const box = $("#messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
}

function setBusyText(text) {
  if (running?.bubble) running.bubble.querySelector(".text").textContent = text;
}

async function ask() {
  const question = $("#question").value.trim();
  if (!question || running) return;
  if (!photo.base) return showNoticeRender(() => t("chat.needPhoto"), "info");
  hideNoticeUnlessModel();
  $("#question").value = "";
  bubble("user", question);
  const reply = bubble("assistant");
  reply.dataset.state = "streaming";
  const controller = new AbortController();
  running = { controller, bubble: reply, sid: null };
  updateButtons();
  const text = reply.querySelector(".text");
  let reasoning = null, answer = "";
  try {
    running.sid = await ensureSession(controller.signal);
    text.textContent = "";
    const resp = await api(`/api/sessions/${running.sid}/ask`, {
      method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(askBody(question)),
    });
    for await (const ev of sseEvents(resp)) {
      if (ev.type === "progress") {   // reading the photo and prompt: a bar until the first token
        showProgress(reply, ev);
        continue;
      }
      clearProgress(reply);
      if (ev.type === "piece" && ev.kind === "reasoning") {
        if (!reasoning) {
          // reasoning is long and secondary: collapsed by default, but its summary line says it is
          // running (and how far it got), so a long silence before the answer is not mistaken for a hang
          const d = document.createElement("details");
          d.className = "reasoning running";
          reasoning = document.createElement("div");
          d.append(document.createElement("summary"), reasoning);
          reply.insertBefore(d, text);
        }
        reasoning.textContent += ev.text;
        setReasoningSummary(reasoning.parentElement, true);
      } else if (ev.type === "piece") {
        if (reasoning) setReasoningSummary(reasoning.parentElement, false);
        answer += ev.text;
        text.textContent = answer;
      } else if (ev.type === "done") {
        if (reasoning) setReasoningSummary(reasoning.parentElement, false);
        finishMeta(reply, ev);
        reply.dataset.state = "done";
      } else if (ev.type === "error") {
        throw new Error(t("err.stream", { msg: ev.message }));
      }
      followScroll();
    }
    if (reply.dataset.state === "streaming") reply.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      reply.dataset.state = "stopped";
      text.textContent = answer + (answer ? " " : "");
      text.append(i18nEl("span", "chat.stopped"));
    } else {
      reply.dataset.state = "error";
      if (e instanceof ApiError && e.status === 404) sessionId = null;   // expired: re-upload next time
      // nothing answered: give the question back, so sending again needs no retyping
      if (!answer && !$("#question").value) $("#question").value = question;
      text.textContent = answer || (e instanceof ApiError ? describeError(e) : e.message);
      showError(e);
    }
  } finally {
    clearProgress(reply);
    // a stream that broke or was stopped mid-reasoning must not keep saying it is running
    if (reasoning) setReasoningSummary(reasoning.parentElement, false);
    running = null;
    updateButtons();
    $("#question").focus();
  }
}

// Progress while the photo and prompt are read (minutes on a laptop CPU): the phase, a bar, and
// the time left as this machine measured it on earlier photos ("estimating…" the first time).
// The bar follows the whole reading when the server has an estimate, else the current phase.
function showProgress(reply, ev) {
  let box = reply.querySelector(".progress");
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
    reply.insertBefore(box, reply.querySelector(".text"));
  }
  const frac = ev.fraction ?? (ev.total > 0 ? ev.done / ev.total : 0);
  const pct = Math.max(0, Math.min(100, Math.round(frac * 100)));
  box.dataset.phase = ev.phase;
  box.setAttribute("aria-valuenow", String(pct));
  box.querySelector(".progress-track > div").style.width = pct + "%";
  const label = box.querySelector(".progress-label");
  label.replaceChildren(i18nEl("span", "progress." + ev.phase), " — ",
    ev.eta_s == null ? i18nEl("span", "progress.estimating")
      : i18nEl("span", "progress.left", { s: Math.max(1, Math.round(ev.eta_s)) }));
  box.setAttribute("aria-label", label.textContent);
}
function clearProgress(reply) {
  reply.querySelector(".progress")?.remove();
}

// the reasoning block's summary: "Reasoning… N characters so far" while it streams, then "Reasoning"
function setReasoningSummary(details, running) {
  const sum = details.querySelector("summary");
  const key = running ? "chat.reasoningRunning" : "chat.reasoning";
  const vars = running ? { chars: details.querySelector("div").textContent.length } : null;
  if (!running && sum.dataset.i18n === key) return;
  details.classList.toggle("running", running);
  sum.dataset.i18n = key;
  if (vars) sum.dataset.i18nVars = JSON.stringify(vars); else delete sum.dataset.i18nVars;
  sum.textContent = t(key, vars || undefined);
}

// a translatable element: applyLang re-renders it from its key and values
function i18nEl(tag, key, vars) {
  const el = document.createElement(tag);
  el.dataset.i18n = key;
  if (vars) el.dataset.i18nVars = JSON.stringify(vars);
  el.textContent = t(key, vars);
  return el;
}

function finishMeta(reply, ev) {
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.append(ev.cached ? i18nEl("span", "chat.metaCached", { tokens: ev.completion_tokens })
    : i18nEl("span", "chat.meta", { tokens: ev.completion_tokens, tps: ev.decode_tps, ttft: Math.round(ev.ttft_ms) }));
  if (ev.reasoning_capped) meta.append(" — ", i18nEl("span", "chat.reasoningCapped"));
  if (ev.finish_reason === "length") meta.append(" — ", i18nEl("span", "chat.cut"));
  reply.append(meta);
  if (!ev.cached && ev.decode_tps && serverStatus) {
    serverStatus.last_decode_tps = ev.decode_tps;
    renderStatus();
  }
}

// Server-sent events over fetch (EventSource cannot POST): split on blank lines, parse data: lines.
async function* sseEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      // the connection broke mid-answer: the same translated "network" message as a failed request
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, String(e.message || e), "network");
    }
    const { value, done } = chunk;
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

// Stop: tell the server (it stops within a token), then drop the connection.
async function stop() {
  if (!running) return;
  const { controller, sid } = running;
  if (sid) {
    try { await api(`/api/sessions/${sid}/cancel`, { method: "POST" }); } catch { /* the abort also cancels */ }
  }
  controller.abort();
}

function hideNoticeUnlessModel() { if (!modelNotice) hideNotice(); }

// ---------------------------------------------------------------------------------------------
// Nameplate reading
let plateResult = null;

async function readPlate() {
  if (running || !photo.base) return;
  hideNoticeUnlessModel();
  const controller = new AbortController();
  running = { controller, sid: null, bubble: null };
  updateButtons();
  const btn = $("#read-plate");
  btn.textContent = t("plate.reading");
  try {
    running.sid = await ensureSession(controller.signal);
    const resp = await api(`/api/sessions/${running.sid}/read-plate`, { method: "POST", signal: controller.signal });
    plateResult = await resp.json();
    renderPlate(plateResult);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) sessionId = null;
    showError(e);
  } finally {
    running = null;
    btn.textContent = t("plate.read");
    updateButtons();
  }
}

// Which fields a warning is about: the server starts each warning with the field key; the power
// check ("power … does not match V·I·PF·η") implicates voltage and current as well.
function warnedFields(warnings) {
  const keys = new Set();
  for (const w of warnings) {
    const m = /^([a-z_]+)[:\s]/.exec(w);
    if (m && FIELDS.includes(m[1])) keys.add(m[1]);
    if (/V·I/.test(w)) ["rated_voltage", "current", "power"].forEach((k) => keys.add(k));
  }
  return keys;
}

function plateRows(r) {
  const rows = FIELDS.map((k) => ({ key: k, label: t("field." + k), value: r.fields?.[k] ?? null, parsed: r.parsed?.[k] }));
  for (const o of r.fields?.other || []) rows.push({ key: "", label: `${t("plate.other")}: ${o.name}`, value: o.value });
  return rows;
}

function renderPlate(r) {
  const warned = warnedFields(r.warnings || []);
  const tbody = $("#plate-table tbody");
  tbody.replaceChildren();
  for (const row of plateRows(r)) {
    const tr = document.createElement("tr");
    if (warned.has(row.key)) tr.className = "warn";
    const q = row.parsed;
    const parsed = q ? `${q.value}${q.max ? "–" + q.max : ""} ${q.unit}`.trim() : "";
    for (const [i, s] of [row.label, row.value ?? t("plate.empty"), parsed].entries()) {
      const td = document.createElement(i ? "td" : "th");
      td.textContent = s;
      if (i === 1 && row.value == null) td.className = "empty";
      tr.append(td);
    }
    tbody.append(tr);
  }
  const ul = $("#plate-warnings");
  ul.replaceChildren(...(r.warnings?.length ? r.warnings : [t("plate.noWarnings")]).map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  $("#plate").hidden = false;
}

function plateText(r) {
  const lines = plateRows(r).filter((x) => x.value != null).map((x) => `${x.label}\t${x.value}`);
  for (const w of r.warnings || []) lines.push(`${t("plate.warnings")}: ${w}`);
  return lines.join("\n");
}

async function copyPlate() {
  const text = plateText(plateResult);
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // older or restricted browsers: the legacy copy command from a hidden textarea
    const ta = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    if (!ok) return showNoticeRender(() => t("plate.copyFailed"));
  }
  showInfo("plate.copied");
}

// Downloads go through fetch (not a plain link) so the bearer token header is sent when needed.
async function exportReadings(format) {
  try {
    const blob = await (await api(`/api/readings?format=${format}`)).blob();
    const name = `readings.${format}`;
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    showInfo("plate.exported", { name });
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------------------------------------
function updateButtons() {
  const has = !!photo.base, busy = !!running;
  $("#rot-left").disabled = $("#rot-right").disabled = !has || busy;
  $("#use-crop").disabled = !photo.pending || busy;
  $("#full-photo").disabled = !photo.crop || busy;
  $("#read-plate").disabled = !has || busy;
  $("#send").disabled = busy;
  $("#stop").disabled = !busy;
  $("#open").disabled = busy;
  document.body.dataset.busy = busy ? "1" : "";
}

// The demo model's sample plate, fetched from the server and opened like a chosen file.
async function openSample() {
  try {
    const res = await api("/api/sample");
    const name = (res.headers.get("Content-Disposition") || "").match(/filename="?([^";]+)/)?.[1] || "sample.jpg";
    await loadFile(new File([await res.blob()], name, { type: "image/jpeg" }));
  } catch (e) {
    showError(e);
  }
}

function wire() {
  $("#open").addEventListener("click", () => $("#file").click());
  $("#demo-sample").addEventListener("click", openSample);
  $("#file").addEventListener("change", (e) => { loadFile(e.target.files[0]); e.target.value = ""; });
  $("#rot-left").addEventListener("click", () => rotate(-1));
  $("#rot-right").addEventListener("click", () => rotate(1));
  $("#use-crop").addEventListener("click", useCrop);
  $("#full-photo").addEventListener("click", fullPhoto);
  $("#read-plate").addEventListener("click", readPlate);
  $("#copy").addEventListener("click", copyPlate);
  $("#export-csv").addEventListener("click", () => exportReadings("csv"));
  $("#export-json").addEventListener("click", () => exportReadings("json"));
  $("#stop").addEventListener("click", stop);
  $("#notice-close").addEventListener("click", () => { hideNotice(); modelNotice = false; });
  $("#ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  $("#thinking").addEventListener("change", () => {
    if ($("#messages .msg.assistant")) addNote("chat.thinkingNote");
  });
  $("#lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("glmv.lang", lang);
    applyLang();
  });

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
    if (running) stop();
    else if (photo.pending) { photo.pending = null; draw(); updateButtons(); }
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
    if (!running) loadFile(e.dataTransfer?.files?.[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item || running) return;   // plain text pastes into the ask box as usual
    e.preventDefault();
    loadFile(item.getAsFile());
  });

  // redraw on layout or devicePixelRatio changes (zooming fires resize)
  new ResizeObserver(() => draw()).observe(canvas);
  window.addEventListener("resize", draw);
}

wire();
applyLang();
updateButtons();
pollStatus();

// The ask request. An optional answer-length limit (localStorage "glmv.maxTokens", an advanced
// setting) lets a slow machine keep answers short; without it the server's default applies.
function askBody(question) {
  const body = { question, thinking: $("#thinking").checked };
  const limit = parseInt(localStorage.getItem("glmv.maxTokens") || "", 10);
  if (limit > 0) body.max_tokens = limit;
  return body;
}
