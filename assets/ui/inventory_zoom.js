// A zoomable photo for the detail panel: the wheel zooms around the pointer, dragging pans, and
// buttons (−, +, Fit) do the same from the keyboard — plate text is small, the technician must be
// able to look closely while typing the value beside it.
import { t } from "./ui.js";

const MIN = 0.05, MAX = 12, STEP = 1.25;

export function zoomView(host) {
  const img = document.createElement("img");
  img.className = "inv-zoom-img";
  img.alt = "";
  img.draggable = false;
  const frame = document.createElement("div");
  frame.className = "inv-zoom";
  frame.append(img);
  const z = { s: 1, x: 0, y: 0, fit: 1 };
  const apply = () => { img.style.transform = `translate(${z.x}px, ${z.y}px) scale(${z.s})`; };

  function fit() {
    const w = img.naturalWidth, h = img.naturalHeight, cw = frame.clientWidth, ch = frame.clientHeight;
    if (!w || !h || !cw || !ch) return;
    z.fit = z.s = Math.min(cw / w, ch / h);
    z.x = (cw - w * z.s) / 2;
    z.y = (ch - h * z.s) / 2;
    apply();
  }
  // zoom by `k` keeping the photo point under (px, py) where it is
  function zoomAt(k, px, py) {
    const s = Math.min(MAX, Math.max(MIN, z.s * k));
    z.x = px - (px - z.x) * (s / z.s);
    z.y = py - (py - z.y) * (s / z.s);
    z.s = s;
    apply();
  }
  frame.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = frame.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? STEP : 1 / STEP, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let from = null;
  frame.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    frame.setPointerCapture(e.pointerId);
    from = { x: e.clientX - z.x, y: e.clientY - z.y };
    frame.classList.add("panning");
  });
  frame.addEventListener("pointermove", (e) => {
    if (!from) return;
    z.x = e.clientX - from.x;
    z.y = e.clientY - from.y;
    apply();
  });
  const end = () => { from = null; frame.classList.remove("panning"); };
  frame.addEventListener("pointerup", end);
  frame.addEventListener("pointercancel", end);
  img.addEventListener("load", fit);
  new ResizeObserver(() => { if (Math.abs(z.s - z.fit) < 1e-6) fit(); }).observe(frame);

  const tools = document.createElement("div");
  tools.className = "inv-zoom-tools";
  const centre = () => [frame.clientWidth / 2, frame.clientHeight / 2];
  for (const [key, act] of [["inv.zoomOut", () => zoomAt(1 / STEP, ...centre())],
                            ["inv.zoomIn", () => zoomAt(STEP, ...centre())], ["inv.zoomFit", fit]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = t(key);
    b.setAttribute("aria-label", t(key + "Aria"));
    b.title = t(key + "Aria");
    b.addEventListener("click", act);
    tools.append(b);
  }
  host.append(frame, tools);
  return { img, frame, show(url, label) { img.alt = label; img.src = url; } };
}
