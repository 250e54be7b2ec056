// The conversation: ask about the current view, the answer streamed into its bubble, Stop, the
// progress bar while the photo and prompt are read (progress.js), the reasoning (collapsed), speed
// and length notes. One request runs at a time (store.running); Stop here stops either kind.
import { $, t, i18nEl } from "./ui.js";
import { api, ApiError, describeError, sseEvents } from "./api.js";
import { showError, showNoticeRender, hideNoticeUnlessModel } from "./notice.js";
import { renderStatus } from "./status.js";
import { store } from "./state.js";
import { photo, ensureSession, updateButtons, onPhotoChanged } from "./photo.js";
import { showProgress, clearProgress } from "./progress.js";

export function addNote(key) {
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

// a different view starts a new conversation on the server: say so where there was one
onPhotoChanged(() => {
  if (store.sessionId || $("#messages .msg:not(.note)")) addNote("photo.changed");
});

// The ask request. An optional answer-length limit (localStorage "glmv.maxTokens", an advanced
// setting) lets a slow machine keep answers short; without it the server's default applies.
function askBody(question) {
  const body = { question, thinking: $("#thinking").checked };
  const limit = parseInt(localStorage.getItem("glmv.maxTokens") || "", 10);
  if (limit > 0) body.max_tokens = limit;
  return body;
}

export async function ask() {
  const question = $("#question").value.trim();
  if (!question || store.running) return;
  if (!photo.base) return showNoticeRender(() => t("chat.needPhoto"), "info");
  hideNoticeUnlessModel();
  $("#question").value = "";
  bubble("user", question);
  const reply = bubble("assistant");
  reply.dataset.state = "streaming";
  const controller = new AbortController();
  const running = store.running = { kind: "chat", controller, bubble: reply, sid: null };
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
        showProgress(reply, ev, text);
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
      if (e instanceof ApiError && e.status === 404) store.sessionId = null;   // expired: re-upload next time
      // nothing answered: give the question back, so sending again needs no retyping
      if (!answer && !$("#question").value) $("#question").value = question;
      text.textContent = answer || (e instanceof ApiError ? describeError(e) : e.message);
      showError(e);
    }
  } finally {
    clearProgress(reply);
    // a stream that broke or was stopped mid-reasoning must not keep saying it is running
    if (reasoning) setReasoningSummary(reasoning.parentElement, false);
    store.running = null;
    updateButtons();
    $("#question").focus();
  }
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

function finishMeta(reply, ev) {
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.append(ev.cached ? i18nEl("span", "chat.metaCached", { tokens: ev.completion_tokens })
    : i18nEl("span", "chat.meta", { tokens: ev.completion_tokens, tps: ev.decode_tps, ttft: Math.round(ev.ttft_ms) }));
  if (ev.reasoning_capped) meta.append(" — ", i18nEl("span", "chat.reasoningCapped"));
  if (ev.finish_reason === "length") meta.append(" — ", i18nEl("span", "chat.cut"));
  reply.append(meta);
  if (!ev.cached && ev.decode_tps && store.serverStatus) {
    store.serverStatus.last_decode_tps = ev.decode_tps;
    renderStatus();
  }
}

// Stop (the button, or Esc): tell the server (it stops within a token). A chat answer's connection
// is then dropped at once: what streamed so far is the answer. A nameplate reading keeps its stream
// open instead: the server ends it with a "done" event holding the fields read so far (marked
// incomplete), which dropping the connection would lose. Only if the server did not take the
// cancel (the reading had not started there yet) or that event does not come within
// STOP_GRACE_MS is the connection dropped (the server cancels on a dropped connection too).
const STOP_GRACE_MS = 5000;
export async function stop() {
  const running = store.running;
  if (!running || running.stopping) return;
  running.stopping = true;
  running.onStopping?.();
  updateButtons();
  const { controller, sid } = running;
  let taken = false;
  if (sid) {
    try {
      taken = (await (await api(`/api/sessions/${sid}/cancel`, { method: "POST" })).json()).cancelled === true;
    } catch { /* the abort below also cancels */ }
  }
  if (running.kind === "plate" && taken) setTimeout(() => controller.abort(), STOP_GRACE_MS);   // a no-op once it ended
  else controller.abort();
}
