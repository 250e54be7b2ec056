// The server's app API as the page uses it: the bearer token, fetch with failures as ApiError, one
// sentence per error for the user, and the server-sent events of a streamed answer. The routes and
// their bodies are described in runtime/app/server/routes_app.py, the error shape in
// runtime/app/server/errors.py, the token and origin checks in runtime/app/server/guard.py.
import { t } from "./ui.js";
import { store } from "./state.js";

// A bearer token (needed when the server listens beyond loopback) arrives once in ?token=…; keep it
// for this tab only and drop it from the address bar so it is not bookmarked.
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

export class ApiError extends Error {
  constructor(status, message, type, retryAfter) {
    super(message);
    Object.assign(this, { status, type, retryAfter });
  }
}

export async function api(path, opts = {}) {
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

// A download through fetch (not a plain link, so the bearer token header is sent), saved under the
// name the server gives it (Content-Disposition), else ``fallback``; returns the name.
export async function download(path, fallback) {
  const res = await api(path);
  const name = (res.headers.get("Content-Disposition") || "").match(/filename="?([^";]+)/)?.[1] || fallback;
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(await res.blob()), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  return name;
}

// One sentence for the user per server error; the server's own message is kept (it is specific:
// which limit, which folders to put the GGUF files in).
export function describeError(e) {
  if (!(e instanceof ApiError)) return t("err.server", { msg: e.message || e });
  const serverStatus = store.serverStatus;
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

// Server-sent events over fetch (EventSource cannot POST): split on blank lines, parse data: lines.
export async function* sseEvents(resp) {
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
