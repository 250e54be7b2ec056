"""The app API the web UI calls (``/api/...``): status, the sample photo, the plate's field list,
a conversation about one photo (upload, ask with a streamed answer, cancel), read-plate, and the
readings log with its CSV export.

Every handler takes the request and finds the shared state with :func:`app_state`.
"""
from __future__ import annotations

import hashlib
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from runtime.app.server import openai_api as oai
from runtime.app.server.app_state import Conversation, app_state
from runtime.app.server.state import RunningAnswer, now_iso
from runtime.app.server.web import EventStream, err, json_body, progress_event, sse
from runtime.engine import images
from runtime.engine.images import ImageError
from runtime.tasks import plate
from runtime.tasks.read_plate import PlateDone, log_done, plate_sampling, read_plate_events, stream_event

READ_PLATE_MAX_TOKENS = 2048


async def status(request: Request):
    return JSONResponse(app_state(request).model_host.status())


async def sample(request: Request):
    # the built-in demo's sample plate, so a first run has something to read
    from runtime.tasks.demo_check import sample_plate
    photo, _ = sample_plate()
    return FileResponse(photo, media_type="image/jpeg", filename=photo.name)


async def plate_fields(request: Request):
    # the page builds its readings table from this, so the field list lives only in plate.FIELDS;
    # "other" comes last: the table shows the plate's other name/value pairs there
    return JSONResponse({"fields": [{"key": k, "label": label} for k, label in plate.FIELDS]
                         + [{"key": "other", "label": "Other"}]})


async def new_conversation(request: Request):
    st = app_state(request)
    engine = st.model_host.require()
    form = await request.form(max_files=2, max_fields=10, max_part_size=st.max_body_bytes)
    photo = form.get("photo")
    if photo is None or isinstance(photo, str):
        return err(400, "send the photo as the multipart file field 'photo'")
    data = await photo.read()
    name = photo.filename or "photo"
    try:
        img = await run_in_threadpool(images.prepare, data, name=name, pixel_budget=st.image_budget())
    except ImageError as e:
        return err(400, str(e), "invalid_image")
    thinking = str(form.get("thinking", "0")).lower() in ("1", "true", "yes", "on")
    sid = uuid.uuid4().hex
    st.conversations.put(sid, Conversation(engine.session(img, enable_thinking=thinking), name,
                                           hashlib.sha256(data).hexdigest()))
    return JSONResponse({"session_id": sid, "width": img.width, "height": img.height})


async def photo_view(request: Request):
    """A photo the browser cannot show itself (HEIC, TIFF) as a JPEG, upright; a photo that is no
    use is a 400 with the same message the reading would give."""
    st = app_state(request)
    form = await request.form(max_files=1, max_fields=2, max_part_size=st.max_body_bytes)
    photo = form.get("photo")
    if photo is None or isinstance(photo, str):
        return err(400, "send the photo as the multipart file field 'photo'")
    data = await photo.read()
    try:
        jpeg = await run_in_threadpool(images.view_jpeg, data, name=photo.filename or "photo")
    except ImageError as e:
        return err(400, str(e), "invalid_image")
    return Response(jpeg, media_type="image/jpeg")


async def conversation_info(request: Request):
    conv = app_state(request).conversation(request.path_params["sid"])
    return JSONResponse({"messages": conv.session.messages, "image_encodes": conv.session.image_encodes,
                         "busy": conv.running is not None})


async def ask(request: Request):
    st = app_state(request)
    conv = st.conversation(request.path_params["sid"])
    body = await json_body(request)
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        return err(400, "'question' must be a non-empty string")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate from a broken client: no tokenizer takes it
        return err(400, "'question' contains characters that are not valid Unicode text")
    max_tokens = body.get("max_tokens", st.default_max_tokens)
    if not oai.positive_int(max_tokens):
        return err(400, "max_tokens must be a positive integer")
    if "thinking" in body and not isinstance(body["thinking"], bool):
        return err(400, "'thinking' must be true or false")
    if conv.running is not None:
        return err(409, "this session is already answering: wait, or cancel it first", "conflict")
    if "thinking" in body:
        conv.session.enable_thinking = body["thinking"]
    # the model's own sampling settings (seeded): the UI answers as `glmv ask` does
    answer = st.model_host.start_generation(lambda cancelled: conv.session.ask(
        question, max_tokens=min(max_tokens, st.n_ctx), cancelled=cancelled, progress=True))
    conv.running = answer
    return EventStream(_answer_events(conv, answer))


async def _answer_events(conv: Conversation, answer: RunningAnswer):
    """The app API's stream: progress while the photo and prompt are read, the answer's pieces,
    then one "done" (or "error") event."""
    try:
        async for step in answer:
            if step.kind == "progress":   # reading the photo and prompt: the UI's bar
                yield sse(progress_event(step))
                continue
            if step.text:
                yield sse({"type": "piece", "kind": step.kind, "text": step.text})
            if step.finish_reason:
                t = step.timings
                yield sse({"type": "done", "finish_reason": step.finish_reason,
                           "reasoning_capped": step.reasoning_capped,
                           "prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
                           "ttft_ms": round(t.ttft_ms, 1), "decode_tps": round(t.decode_tps, 1),
                           "cached": step.cached, "image_encodes": conv.session.image_encodes})
    except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
        yield sse({"type": "error", "message": str(e)})
    finally:
        conv.running = None


async def cancel(request: Request):
    conv = app_state(request).conversation(request.path_params["sid"])
    answer = conv.running
    if answer is not None:
        answer.cancel.set()
    return JSONResponse({"cancelled": answer is not None})


async def read_plate(request: Request):
    """The read-plate use case (runtime/tasks/read_plate.py) on the conversation's photo; the
    server runs the steps itself so that Stop, or the client leaving, cancels the reading.

    ``{"stream": true}`` (or ``?stream=1``) answers with server-sent events as the model reads:
    ``progress`` (the photo and prompt, as the chat's), ``field`` (one value complete), ``decode``
    (tokens, speed, time left), then ``done`` with the reading — ``incomplete`` after Stop, when it
    holds the fields read so far and is not logged. Without it: one JSON reading at the end."""
    st = app_state(request)
    conv = st.conversation(request.path_params["sid"])
    engine = st.model_host.require()
    body = await json_body(request) if (await request.body()).strip() else {}   # a body is optional
    max_tokens = body.get("max_tokens", READ_PLATE_MAX_TOKENS)
    if not oai.positive_int(max_tokens):
        return err(400, "max_tokens must be a positive integer")
    stream = body.get("stream", request.query_params.get("stream", "0") in ("1", "true"))
    if not isinstance(stream, bool):
        return err(400, "'stream' must be true or false")
    if conv.running is not None:
        return err(409, "this session is already answering: wait, or cancel it first", "conflict")
    # a fresh one-turn session on the same photo (the plate prompt stays out of the chat);
    # it borrows the chat session's image embeddings so the photo is not encoded again
    side = conv.session.side_session()
    sampling = plate_sampling(engine.sampling)
    limit = min(max_tokens, st.n_ctx)
    answer = st.model_host.start_generation(lambda cancelled: read_plate_events(
        side, sampling=sampling, max_tokens=limit, cancelled=cancelled, progress=stream, limit_name="max_tokens"))
    conv.running = answer
    if stream:
        return EventStream(_plate_events(st, conv, answer))
    try:
        items = await answer.collect(request.is_disconnected)
    finally:
        conv.running = None
    done = next((x for x in items if isinstance(x, PlateDone)), None)
    if done is None or not done.complete:
        # stopped by the user or the client left: not a reading, so nothing goes into the log
        return err(409, "the reading was cancelled", "cancelled")
    await run_in_threadpool(_log_reading, st, conv, done)
    return JSONResponse(done.reading.as_json())


def _log_reading(st, conv: Conversation, done: PlateDone) -> bool:
    model = st.model_host.model
    return log_done(st.readings_log, done, photo=conv.photo_name, photo_sha256=conv.photo_sha256,
                    model=model["text"], mmproj=model["mmproj"], quant=model["quant"], when=now_iso())


async def _plate_events(st, conv: Conversation, answer: RunningAnswer):
    """read-plate's event stream (see :func:`read_plate`)."""
    try:
        async for ev in answer:
            event = stream_event(ev)
            if event is None:
                continue
            if isinstance(ev, PlateDone):
                event["logged"] = await run_in_threadpool(_log_reading, st, conv, ev)
            yield sse(event)
    except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
        yield sse({"type": "error", "message": str(e)})
    finally:
        conv.running = None


async def readings(request: Request):
    log = await run_in_threadpool(plate.read_log, app_state(request).readings_log)
    fmt = request.query_params.get("format", "json")
    if fmt == "json":
        return JSONResponse(log)
    if fmt != "csv":
        return err(400, "format must be json or csv")
    rows = [(rec.get("photo", ""), plate.PlateReading(rec.get("fields") or {}, warnings=rec.get("warnings") or [],
                                                      raw=rec.get("raw", ""))) for rec in log]
    # the BOM makes spreadsheet programs on Windows read the file as UTF-8 (Chinese labels, m³/h)
    return Response("\ufeff" + plate.to_csv(rows, formula_safe=True), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="readings.csv"'})
