"""The OpenAI-compatible endpoints (``/v1/models``, ``/v1/chat/completions``): the HTTP side of
``openai_api`` (which parses requests and shapes answers) and ``openai_choices`` (n, stop)."""
from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from runtime.app.server import openai_api as oai
from runtime.app.server.app_state import app_state
from runtime.app.server.openai_choices import choice_logprobs, logprobs_content, run_choices
from runtime.app.server.web import EventStream, json_body, progress_event, sse


async def models(request: Request):
    st = app_state(request)
    st.model_host.require()
    return JSONResponse(oai.models_list(st.model_id(), st.started))


async def chat_completions(request: Request):
    st = app_state(request)
    model_host = st.model_host
    engine = model_host.require()
    req = oai.parse_chat(await json_body(request), n_ctx=st.n_ctx, defaults=engine.sampling)
    img = await run_in_threadpool(oai.prepare_image, req.image_bytes, st.image_budget()) if req.image_bytes else None
    session = engine.session(img, enable_thinking=req.thinking)
    if req.history:  # a conversation this server answered before? its session is warm
        known = st.openai_sessions.pop(req.key(session.image_sha256))
        if known is not None:
            session = known
            model_host.count("sessions_reused")
    session.messages = list(req.history)

    def ask(sampling, cancelled):   # one choice; run_choices asks n times and cuts at stop sequences
        return session.ask(req.question, max_tokens=req.max_tokens, sampling=sampling, cancelled=cancelled,
                           reasoning_budget=req.reasoning_budget, max_total=req.max_total, progress=req.stream,
                           logprobs=req.logprobs)
    answer = model_host.start_generation(lambda cancelled: run_choices(session, req, ask, cancelled))

    def remember(last):
        if last.finish_reason in ("stop", "length"):
            st.openai_sessions.put(oai.history_key(session.image_sha256, req.thinking, session.messages), session)

    cid, name, created = oai.completion_id(), st.model_id(), int(time.time())
    if not req.stream:
        steps = await answer.collect(request.is_disconnected)
        choices = oai.split_choices(steps)
        if choices:
            remember(choices[-1][2])   # the session holds the last choice's answer
        return JSONResponse(oai.completion(cid, name, choices, choice_logprobs(steps) if req.logprobs else None))

    async def events():
        index, lasts = 0, []   # choices come one after another; each ends with a finish_reason
        yield sse(oai.chunk(cid, name, created, {"role": "assistant", "content": ""}))
        try:
            async for step in answer:
                if step.kind == "progress":   # an SSE comment: OpenAI clients skip it, a person may read it
                    yield oai.progress_comment(progress_event(step))
                    continue
                if step.text or (req.logprobs and step.kind == "answer" and step.pieces):
                    key = "reasoning_content" if step.kind == "reasoning" else "content"
                    # a chunk's logprobs are the tokens of its text (a token that ended inside a
                    # character rides with the chunk that shows it)
                    lp = ({"content": logprobs_content(step.pieces), "refusal": None}
                          if req.logprobs and step.kind == "answer" else None)
                    yield sse(oai.chunk(cid, name, created, {key: step.text}, index=index, logprobs=lp))
                if step.finish_reason:
                    lasts.append(step)
                    yield sse(oai.chunk(cid, name, created, {}, oai.FINISH.get(step.finish_reason, "stop"), index))
                    index += 1
                    if index < req.n:
                        yield sse(oai.chunk(cid, name, created, {"role": "assistant", "content": ""}, index=index))
            if lasts:
                remember(lasts[-1])
            if lasts and req.include_usage:
                yield sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": name, "choices": [], "usage": oai.usage(lasts)})
        except Exception as e:  # noqa: BLE001 - mid-stream: report in-band as OpenAI does
            yield sse({"error": {"message": str(e), "type": "server_error"}})
        yield sse("[DONE]")
    return EventStream(events())
