// The inventory's pictures: thumbnails and originals fetched through api() (an <img src> could not
// send the bearer token a server beyond loopback needs) and shown as blob: URLs. Thumbnails load
// when they scroll into view (a batch of a thousand photos must not fetch a thousand at once) and
// are kept per photo id; a photo's bytes never change, so a cached URL stays right until removal.
import { api } from "./api.js";

const thumbs = new Map();          // id → Promise<blob URL | null>
const MAX_PARALLEL = 4;
let running = 0;
const waiting = [];

function limited(fn) {
  return new Promise((resolve) => {
    const go = async () => {
      running++;
      try { resolve(await fn()); } catch { resolve(null); } finally {
        running--;
        waiting.shift()?.();
      }
    };
    running < MAX_PARALLEL ? go() : waiting.push(go);
  });
}

function thumbUrl(id) {
  if (!thumbs.has(id)) {
    const p = limited(async () => URL.createObjectURL(await (await api(`/api/inventory/photos/${id}/thumb`)).blob()));
    thumbs.set(id, p);
    p.then((url) => { if (!url) thumbs.delete(id); });   // a failed fetch is tried again next time
  }
  return thumbs.get(id);
}

// Fill <img> elements with their photo's thumbnail once they are on screen.
const seen = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    seen.unobserve(e.target);
    const id = Number(e.target.dataset.thumb);
    thumbUrl(id).then((url) => { if (url && e.target.dataset.thumb === String(id)) e.target.src = url; });
  }
}, { rootMargin: "200px" });

// A thumbnail <img> for photo `id` (decorative: the name beside it says what it is).
export function thumbImg(id, hasPhoto = true) {
  const img = document.createElement("img");
  img.className = "inv-thumb";
  img.alt = "";
  img.decoding = "async";
  if (hasPhoto) {
    img.dataset.thumb = String(id);
    seen.observe(img);
  }
  return img;
}

// A removed photo's thumbnail is let go.
export function forgetThumb(id) {
  const p = thumbs.get(id);
  thumbs.delete(id);
  p?.then((url) => url && URL.revokeObjectURL(url));
}

// The original photo as a Blob (the detail view, "chat about this photo").
export async function photoBlob(id) {
  return (await api(`/api/inventory/photos/${id}/image`)).blob();
}
