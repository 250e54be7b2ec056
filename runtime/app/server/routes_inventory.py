"""The inventory's API (``/api/inventory/...``), what the window's inventory view calls: add
photos, the table and the queue's progress (polled, only what changed since a revision), the
queue's controls, the technician's corrections, the photo and its thumbnail, exports, and the
engine that reads (this computer's model or a remote OpenAI-compatible one).

Every handler finds the inventory through :func:`inventory_host`; the store's own messages
(``InventoryError``) are 400s, an engine that cannot be reached or refuses is said as it is.
"""
from __future__ import annotations

import hashlib
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from runtime.app.server.app_state import app_state
from runtime.app.server.web import err, json_body
from runtime.engine import images
from runtime.tasks import plate
from runtime.tasks.inventory.intake import too_large
from runtime.tasks.inventory.store import FIELD_KEYS, InventoryError

MAX_FILES_PER_REQUEST = 50
MAX_CONCURRENCY = 64


def inventory_host(request: Request):
    host = app_state(request).inventory
    if host.error:
        raise InventoryUnavailable(host.error)
    return host


class InventoryUnavailable(Exception):
    pass


def _flag_below() -> float:
    from runtime.tasks.plate_confidence import FLAG_BELOW
    return FLAG_BELOW


async def overview(request: Request):
    """``?since=REV``: the rows changed after that revision (all of them without it), every id
    in table order, the queue's state and progress, and what the page needs to draw the table."""
    host = inventory_host(request)
    try:
        since = int(request.query_params.get("since", "0"))
    except ValueError:
        return err(400, "since must be a revision number")

    def gather():
        rev = host.inventory.revision()
        rows = host.inventory.rows(since=since)
        return {"rev": rev, "ids": host.inventory.ids(), "rows": [r.as_json(_flag_below()) for r in rows],
                "queue": host.queue.status(), "flag_below": _flag_below(),
                "max_photo_bytes": images.DEFAULT_MAX_FILE_BYTES,
                "fields": [{"key": k, "label": label} for k, label in plate.FIELDS] + [{"key": "other", "label": "Other"}]}
    return JSONResponse(await run_in_threadpool(gather))


async def add_photos(request: Request):
    """Multipart, one or more files in the field ``photo`` (a dropped folder's relative path as
    the file name). Each is checked as one photo is: a bad file becomes an error row and the
    others go on. The same bytes again are the row they already have (``duplicate``)."""
    st = app_state(request)
    host = inventory_host(request)
    form = await request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=MAX_FILES_PER_REQUEST + 4,
                              max_part_size=st.max_body_bytes)
    files = [f for f in form.getlist("photo") if not isinstance(f, str)]
    if not files:
        return err(400, "send the photos as multipart file fields named 'photo'")
    out = []
    for f in files:
        data = await f.read()
        name = (f.filename or "photo").replace("\\", "/").lstrip("/")
        added = await run_in_threadpool(host.inventory.add, data, name, source="window",
                                        pixel_budget=st.image_budget())
        out.append({"id": added.row.id, "name": added.row.name, "state": added.row.state,
                    "error": added.row.error, "duplicate": added.duplicate})
    host.queue.wake()
    return JSONResponse({"added": out})


async def add_refused(request: Request):
    """A file the page did not send because it is larger than a photo may be: its error row."""
    host = inventory_host(request)
    body = await json_body(request)
    name, size = body.get("name"), body.get("bytes")
    if not isinstance(name, str) or not isinstance(size, int) or size < 0:
        return err(400, "send {name, bytes} of the file")
    # its bytes were never read: its identity is its name, size and date as the page saw them
    ident = hashlib.sha256(f"unread:{name}:{size}:{body.get('modified')}".encode()).hexdigest()
    added = await run_in_threadpool(host.inventory.add_error, ident, name, size, too_large(name, size),
                                    source="window")
    return JSONResponse({"id": added.row.id, "state": added.row.state, "error": added.row.error,
                         "duplicate": added.duplicate})


def _photo_id(request: Request) -> int:
    try:
        return int(request.path_params["pid"])
    except ValueError:
        raise InventoryError("a photo id is a number") from None


# what every browser shows as it is; other photos (HEIC, TIFF) are shown as a JPEG made from them
WEB_VIEWABLE = {".jpg", ".png", ".webp", ".gif", ".bmp"}


async def photo_file(request: Request):
    """``thumb``: the 192-px JPEG; ``image``: the photo — as stored when a browser can show it,
    else (HEIC, TIFF) a JPEG of it, upright (the original is in the folder export)."""
    host = inventory_host(request)
    row = await run_in_threadpool(host.inventory.row, _photo_id(request))
    which = request.path_params["which"]
    if which not in ("image", "thumb"):
        return err(404, "a photo's files are image and thumb", "not_found_error")
    thumb = which == "thumb"
    path = host.inventory.thumb_path(row) if thumb else host.inventory.photo_path(row)
    if path is None or not path.is_file():
        return err(404, f"{row.name} has no stored photo ({row.error or 'it was not kept'})", "not_found_error")
    cache = {"Cache-Control": "private, max-age=86400"}
    if thumb:
        return FileResponse(path, media_type="image/jpeg", headers=cache)
    if path.suffix in WEB_VIEWABLE:
        return FileResponse(path, headers=cache)
    data = await run_in_threadpool(path.read_bytes)
    return Response(await run_in_threadpool(lambda: images.view_jpeg(data, name=row.name)), media_type="image/jpeg",
                    headers=cache)


ACTIONS = {"skip", "requeue", "remove", "confirm"}


async def photo_action(request: Request):
    """``skip`` (the running reading stops), ``requeue`` (a skipped or failed photo read again),
    ``remove`` (gone from the inventory, its copy deleted), ``confirm`` (every unchecked field
    as the model read it)."""
    host = inventory_host(request)
    pid, action = _photo_id(request), request.path_params["action"]
    if action not in ACTIONS:
        return err(404, f"no action {action!r}: {', '.join(sorted(ACTIONS))}", "not_found_error")
    await run_in_threadpool(host.inventory.row, pid)     # 400 when it does not exist
    fn = {"skip": host.queue.skip, "remove": host.queue.remove, "confirm": host.inventory.confirm,
          "requeue": host.inventory.requeue}[action]
    await run_in_threadpool(fn, pid)
    host.queue.wake()
    return JSONResponse({"ok": True, "rev": host.inventory.revision()})


async def reorder(request: Request):
    host = inventory_host(request)
    ids = (await json_body(request)).get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        return err(400, "'ids' must be the list of queued photo ids in their new order")
    await run_in_threadpool(host.inventory.reorder, ids)
    return JSONResponse({"ok": True, "rev": host.inventory.revision()})


async def queue_control(request: Request):
    host = inventory_host(request)
    action = request.path_params["action"]
    if action == "pause":
        host.queue.pause()
    elif action == "resume":
        host.queue.resume()
    else:
        return err(404, "the queue's actions are pause and resume", "not_found_error")
    return JSONResponse(host.queue.status())


async def correct_field(request: Request):
    """PUT ``{"value": text or null}``: the technician's value, saved at once (the model's is
    kept); DELETE: back to the model's value."""
    host = inventory_host(request)
    pid, key = _photo_id(request), request.path_params["key"]
    if key not in FIELD_KEYS:
        return err(404, f"no field {key!r}", "not_found_error")
    if request.method == "DELETE":
        await run_in_threadpool(host.inventory.undo_correction, pid, key)
        return JSONResponse({"ok": True})
    body = await json_body(request)
    if "value" not in body:
        return err(400, "send {\"value\": text or null}")
    value = body["value"]
    if isinstance(value, str):
        value = value.strip()
        if len(value) > 4 * plate.MAX_FIELD_CHARS:
            return err(400, f"a value is at most {4 * plate.MAX_FIELD_CHARS} characters")
    c = await run_in_threadpool(host.inventory.correct, pid, key, value)
    return JSONResponse({"value": c.value, "changed": c.changed})


async def export(request: Request):
    from runtime.tasks.inventory import export as ex
    host = inventory_host(request)
    fmt = request.query_params.get("format", "csv")
    stamp = time.strftime("%Y%m%d-%H%M")
    if fmt == "csv":
        text = await run_in_threadpool(lambda: ex.to_csv(host.inventory.rows()))
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="inventory-{stamp}.csv"'})
    if fmt == "xlsx":
        data = await run_in_threadpool(lambda: ex.to_xlsx(host.inventory.rows()))
        return Response(data, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": f'attachment; filename="inventory-{stamp}.xlsx"'})
    return err(400, "format must be csv or xlsx")


async def export_folder(request: Request):
    """The whole inventory as a folder in the data folder's ``exports/`` (table, photos, JSON),
    ready to copy off the stick; the answer says where."""
    from runtime.tasks.inventory import export as ex
    host = inventory_host(request)
    dest = app_state(request).data_dir / "exports" / f"inventory-{time.strftime('%Y%m%d-%H%M%S')}"
    path = await run_in_threadpool(lambda: ex.export_folder(host.inventory, host.inventory.rows(), dest))
    return JSONResponse({"path": str(path)})


async def engine(request: Request):
    """GET: the engine that reads (never its token). PUT ``{"kind": "local"}`` or ``{"kind":
    "remote", "url", "token", "model", "concurrency"}``: switched once the engine answered."""
    host = inventory_host(request)
    if request.method == "GET":
        return JSONResponse(host.engine_setting())
    body = await json_body(request)
    kind = body.get("kind")
    if kind == "local":
        return JSONResponse(await run_in_threadpool(host.use_local))
    if kind != "remote":
        return err(400, "'kind' is local or remote")
    url, token, model = body.get("url"), body.get("token"), body.get("model")
    conc = body.get("concurrency", 2)
    if not isinstance(url, str) or not url.strip().lower().startswith(("http://", "https://")):
        return err(400, "'url' is the engine's address, e.g. http://gpu-server:8000/v1")
    if token is not None and not isinstance(token, str) or model is not None and not isinstance(model, str):
        return err(400, "'token' and 'model' are text")
    if not isinstance(conc, int) or not 1 <= conc <= MAX_CONCURRENCY:
        return err(400, f"'concurrency' is how many photos are in flight at once: 1 to {MAX_CONCURRENCY}")
    from runtime.tasks.inventory.errors import RemoteError
    try:
        got = await run_in_threadpool(host.use_remote, url.strip(), token or None, model or None, conc)
    except RemoteError as e:
        return err(502, str(e), "engine_error")
    return JSONResponse(got)


async def on_inventory_error(request, exc: InventoryError):
    return err(400, str(exc))


async def on_unavailable(request, exc: InventoryUnavailable):
    return err(503, str(exc), "inventory_unavailable")


HANDLERS = {InventoryError: on_inventory_error, InventoryUnavailable: on_unavailable}
