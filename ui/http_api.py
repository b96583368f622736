"""The HTTP API (`rag serve`): REST endpoints with OpenAPI, and an OpenAI-compatible chat endpoint.

A front end like the web chat and the Slack bot: it validates, authenticates, limits, counts and serialises;
retrieval, answers, citations and their checks are `rag.api.Assistant`'s (one per process, shared by every
request; sync endpoints run in the server's thread pool, so a slow answer does not hold up the others).
It does not read the index's files (no chromadb here) and does not fetch urls itself: `Assistant.index`
does, from public addresses only unless RAG_API_ALLOW_PRIVATE_URLS is set.

Errors have OpenAI's shape everywhere (`{"error": {"message", "type", "param", "code"}}`), so OpenAI clients
show them; the answer documents are exactly `rag ask --json`'s and `rag show --json`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.api import Assistant, QuestionError
from rag.config import Settings
from rag.errors import IndexError_, RagError, UserError
from rag.feeds import is_loopback
from rag.ingest import SUFFIXES, suffix_of
from rag.types import Answer, Filters, Hit, IndexReport, Message

MODEL = "rag-news"  # the one model name of the OpenAI-compatible endpoints
LOG = logging.getLogger("rag.http")


# ---------------------------------------------------------------- errors


class ApiError(RagError):
    """An error answered in OpenAI's shape with `status`."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes", code="request_too_large")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return (f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request")),
            where or None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return ApiError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ApiError):  # the body limit, met while FastAPI read the body
            return exc.__cause__.response()
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of the first route of the path only
            headers["Allow"] = ", ".join(_allowed(request.app, request.scope))
        return ApiError(exc.status_code, str(exc.detail), code=code, headers=headers).response()

    @app.exception_handler(QuestionError)
    async def bad_question(_request: Request, exc: QuestionError) -> JSONResponse:
        return ApiError(400, str(exc), param="question", code="invalid_question").response()

    @app.exception_handler(IndexError_)
    async def index_unavailable(_request: Request, exc: IndexError_) -> JSONResponse:
        # a busy writer, a broken or full index: the client may retry later
        return ApiError(503, str(exc), kind="server_error", code="index_unavailable",
                        headers={"Retry-After": "5"}).response()

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        LOG.exception("unexpected error")
        return ApiError(500, f"internal error ({type(exc).__name__})", kind="server_error").response()


def _allowed(app: FastAPI, scope) -> list[str]:
    """The methods of every route of the request's path."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.router.routes:
        if route.matches(scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


# ---------------------------------------------------------------- models (OpenAPI)


def _iso(value: Any) -> Any:
    if not isinstance(value, (str, date)):  # a number would be read as a timestamp
        raise ValueError("a date is written YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterFields(Strict):
    sources: list[str] = Field(default_factory=list, description="only these sources")
    since: IsoDate | None = Field(None, description="only articles published on or after this day")
    until: IsoDate | None = Field(None, description="only articles published on or before this day")

    def filters(self) -> Filters:
        try:
            return Filters(tuple(self.sources), self.since, self.until)
        except ValueError as exc:  # since after until
            raise ApiError(400, f"since/until: {exc}", param="since") from None


class SearchRequest(FilterFields):
    question: str = Field(pattern=r"\S", description="the question (at most RAG_MAX_QUESTION_CHARS characters "
                          "once its runs of white space count as one)")
    k: int | None = Field(None, ge=1, le=100, description="passages to retrieve")


class AskRequest(SearchRequest):
    today: IsoDate | None = Field(None, description="the day relative time words ('this week', "
                               "'since Tuesday') count from (default: the server's today)")


class ChatTurn(Strict):
    role: Literal["user", "assistant", "system"]
    content: str


class ChatRequest(FilterFields):
    messages: list[ChatTurn] = Field(min_length=1)
    stream: bool = Field(False, description="server-sent events: `text` per checked sentence, then `answer`")


class CitationDoc(BaseModel):
    n: int
    article_id: str
    title: str
    source: str
    published: str
    url: str
    path: str
    quote: str = Field(description="exactly the article's text[start:end]")
    start: int
    end: int
    attribution: str = ""
    also_reported_by: list[str] = Field(default_factory=list)


class TimelineDoc(BaseModel):
    date: str
    text: str
    citations: list[int]


class DatesDoc(BaseModel):
    phrase: str
    since: str
    until: str
    reference: str
    reference_kind: str


class AnswerDoc(BaseModel):
    """The `rag ask --json` document."""

    question: str
    answer: str
    abstained: bool
    citations: list[CitationDoc]
    timeline: list[TimelineDoc]
    notice: str | None = None
    dates: DatesDoc | None = None


class HitDoc(BaseModel):
    article_id: str
    title: str
    source: str
    published: str
    url: str
    chunk_id: str
    start: int
    end: int
    text: str = Field(description="the passage: the article's text[start:end]")
    score: float
    also_reported_by: list[str]


class SearchDoc(BaseModel):
    question: str
    hits: list[HitDoc]


class ArticleDoc(BaseModel):
    """The `rag show --json` document."""

    id: str
    title: str
    source: str
    published: str
    url: str
    path: str
    text: str


class IndexUrls(Strict):
    urls: list[str] = Field(min_length=1, max_length=50, description="http(s) urls of feeds or article pages")


class ItemResult(BaseModel):
    item: str
    indexed: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    duplicates: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    error: str | None = None


class IndexDoc(BaseModel):
    results: list[ItemResult]


class RemovedDoc(BaseModel):
    removed: list[str]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorDoc(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorBody


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class OpenAIChatRequest(BaseModel):
    """OpenAI's chat request; sampling parameters are accepted and ignored (the answer is cited, not sampled)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    user: str | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None


# ---------------------------------------------------------------- keys, rate limit, body limit


def load_keys(settings: Settings) -> list[str]:
    """The API keys: RAG_API_KEYS (comma-separated) and the lines of RAG_API_KEYS_FILE ("#" starts a comment)."""
    keys = [k.strip() for k in settings.api_keys.get_secret_value().split(",") if k.strip()]
    if settings.api_keys_file is not None:
        try:
            lines = Path(settings.api_keys_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"RAG_API_KEYS_FILE={settings.api_keys_file}: cannot be read ({exc.strerror})") from None
        keys += [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    return keys


class RateLimit:
    """A token bucket per client: `per_minute` requests a minute, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait(self, who: str) -> float:
        """0 when `who` may go ahead now (taking a token), else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1 - tokens) / self.rate


class Guard:
    """The dependency of every /v1 route: the API key (when keys are configured), then the rate limit."""

    def __init__(self, keys: list[str], per_minute: int) -> None:
        self.keys = [k.encode() for k in keys]
        self.limit = RateLimit(per_minute) if per_minute else None

    def __call__(self, request: Request) -> None:
        who = request.client.host if request.client else "?"
        if self.keys:
            given = _given_key(request)
            if not given:
                raise ApiError(401, "no API key: send `Authorization: Bearer KEY` or `x-api-key: KEY`",
                               code="invalid_api_key")
            # every key compared, in constant time: the time taken does not tell which prefix was right
            if not any([hmac.compare_digest(given.encode(), k) for k in self.keys]):
                raise ApiError(401, "incorrect API key provided", code="invalid_api_key")
            who = "key:" + hashlib.sha256(given.encode()).hexdigest()[:12]
        request.state.client = who
        if self.limit is not None:
            wait = self.limit.wait(who)
            if wait:
                seconds = max(1, int(wait + 0.999))
                raise ApiError(429, f"rate limit reached: try again in {seconds} s", kind="requests",
                               code="rate_limit_exceeded", headers={"Retry-After": str(seconds)})


def _given_key(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key", "").strip()


class Observe:
    """ASGI middleware: the body size limit, one JSON log line per request and the request metrics."""

    def __init__(self, app, metrics: Metrics, json_limit: int, upload_limit: int, log_questions: bool) -> None:
        self.app, self.metrics = app, metrics
        self.json_limit, self.upload_limit, self.log_questions = json_limit, upload_limit, log_questions

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] == "/v1/index" else self.json_limit
        started, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await BodyTooLarge(limit).response()(scope, receive, sending)
        else:
            await self.app(scope, _limited(receive, limit), sending)
        self._record(scope, status[0], time.perf_counter() - started)

    def _record(self, scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)
        state = scope.get("state") or {}
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "method": scope["method"], "route": route,
                "status": status, "ms": round(seconds * 1000, 1), "client": state.get("client", "")}
        if self.log_questions and state.get("question"):
            line["question"] = state["question"]
        LOG.info(json.dumps(line, ensure_ascii=False))


def _limited(receive, limit: int):
    seen = [0]

    async def receiving():
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise BodyTooLarge(limit)
        return message
    return receiving


class Metrics:
    """Prometheus metrics of one app, in a registry of its own (two apps in one process do not clash)."""

    def __init__(self, assistant: Assistant, llm: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.llm = llm
        self.requests = Counter("rag_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("rag_http_request_seconds", "Time to answer a request (streams: to the end)",
                                 ["route"], registry=registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.answers = Counter("rag_answers", "Answers given, by endpoint", ["endpoint"], registry=registry)
        self.abstentions = Counter("rag_abstentions", "Answers that abstained (not found in the articles)",
                                   ["endpoint"], registry=registry)
        self.fallbacks = Counter("rag_llm_fallbacks", "Answers given extractively because the LLM failed or "
                                 "was backing off", registry=registry)
        generation = Gauge("rag_index_generation", "The index's generation (bumped by each completed write)",
                           registry=registry)
        generation.set_function(assistant.generation)

    def answered(self, answer: Answer, endpoint: str) -> None:
        self.answers.labels(endpoint).inc()
        if answer.abstained:
            self.abstentions.labels(endpoint).inc()
        if self.llm != "extractive" and "extractive" in answer.notice.lower():
            self.fallbacks.inc()


# ---------------------------------------------------------------- documents


def hit_doc(hit: Hit) -> dict:
    return {"article_id": hit.article.id, "title": hit.article.title, "source": hit.article.source,
            "published": hit.article.published, "url": hit.article.url, "chunk_id": hit.chunk.id,
            "start": hit.chunk.start, "end": hit.chunk.end, "text": hit.chunk.text, "score": round(hit.score, 6),
            "also_reported_by": [c.source for c in hit.copies if c.source]}


def report_doc(item: str, report: IndexReport) -> dict:
    return {"item": item, "indexed": list(report.indexed), "replaced": list(report.replaced),
            "unchanged": list(report.unchanged), "duplicates": list(report.duplicates),
            "skipped": [str(s) for s in report.skipped]}


def content_with_sources(answer: Answer) -> str:
    """The answer's text with its [n] markers, then "Sources:" (title, source, date, url, quote)."""
    sources = sources_text(answer)
    return answer.text + (f"\n\n{sources}" if sources else "")


def sources_text(answer: Answer) -> str:
    lines = ["Sources:"] if answer.citations else []
    for c in answer.citations:
        where = ", ".join(x for x in (c.source, c.published, c.url or c.path) if x)
        quote = " ".join(c.quote.split())
        lines.append(f"[{c.n}] {c.title} ({where}): \u201c{quote}\u201d")
    return "\n".join(lines)


def safe_name(name: str) -> str:
    """A file name for the uploads folder: no folders, no leading dot, no odd characters."""
    base = re.sub(r"[^\w.\-]+", "_", name.replace("\\", "/").rsplit("/", 1)[-1]).lstrip("._")
    return base[-120:] or "upload"


# ---------------------------------------------------------------- the app


def build_app(assistant: Assistant, settings: Settings) -> FastAPI:
    """The FastAPI app serving `assistant` (which the caller opens and closes)."""
    app = FastAPI(title="rag-news", version="1", description="Questions about news articles, answered with "
                  "exact quotes. Errors have OpenAI's shape. With API keys configured, /v1 routes need "
                  "`Authorization: Bearer KEY` or `x-api-key: KEY`.")
    metrics = Metrics(assistant, settings.llm)
    guard = Depends(Guard(load_keys(settings), settings.api_rate_limit))
    app.add_middleware(Observe, metrics=metrics, json_limit=settings.api_max_body_kb * 1024,
                       upload_limit=settings.api_max_upload_mb * 2**20, log_questions=settings.api_log_questions)
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "x-api-key"])
    _install_error_handlers(app)
    _rest_routes(app, assistant, metrics, guard)
    _index_routes(app, assistant, settings, guard)
    _openai_routes(app, assistant, metrics, guard)
    app.openapi = lambda: _documented(app, settings)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> dict:
        stats = assistant.stats()  # the index answers
        return {"ready": True, "articles": stats["articles"], "generation": assistant.generation()}

    @app.get("/metrics", tags=["operations"], dependencies=[guard], response_class=Response)
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


_ERRORS = {"400": "invalid request (OpenAI's error shape, as every error)", "401": "no or a wrong API key",
           "413": "request body too large", "429": "rate limit reached (see Retry-After)",
           "503": "the index is busy or unavailable (see Retry-After)"}


def _documented(app: FastAPI, settings: Settings) -> dict:
    """The OpenAPI document as the API behaves: errors in OpenAI's shape with their real codes (400, not
    FastAPI's 422), 404 where a path names something, the question's length limit."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(ErrorDoc.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs"))
    schemas["ErrorDoc"] = ErrorDoc.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDoc"}}}}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            responses.pop("422", None)
            codes = dict(_ERRORS) if path.startswith("/v1/") else {}
            if "{" in path or path == "/v1/chat/completions":  # an article, a model
                codes["404"] = "not found"
            for code, description in codes.items():
                responses.setdefault(code, {"description": description, **error})
    for name in ("AskRequest", "SearchRequest"):
        schemas[name]["properties"]["question"]["maxLength"] = settings.max_question_chars
    upload = spec["paths"]["/v1/index"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    upload["required"] = ["files"]
    upload["properties"]["files"]["minItems"] = 1
    app.openapi_schema = spec
    return spec


def _rest_routes(app: FastAPI, assistant: Assistant, metrics: Metrics, guard) -> None:
    @app.post("/v1/ask", response_model=AnswerDoc, response_model_exclude_none=True, dependencies=[guard],
              tags=["answers"])
    def ask(body: AskRequest, request: Request) -> dict:
        """The cited answer to one question: exactly `rag ask --json`'s document."""
        request.state.question = body.question
        answer = assistant.ask(body.question, body.filters(), k=body.k, today=body.today)
        metrics.answered(answer, "ask")
        return answer.to_dict()

    @app.post("/v1/search", response_model=SearchDoc, dependencies=[guard], tags=["answers"])
    def search(body: SearchRequest, request: Request) -> dict:
        """The best passages for a question, best first (one per syndicated story)."""
        request.state.question = body.question
        hits = assistant.search(body.question, body.k, body.filters())
        return {"question": body.question, "hits": [hit_doc(h) for h in hits]}

    @app.post("/v1/chat", response_model=AnswerDoc, response_model_exclude_none=True, dependencies=[guard],
              tags=["answers"], responses={200: {"content": {"text/event-stream": {}}}})
    def chat(body: ChatRequest, request: Request):
        """The answer to the last user turn (earlier turns complete a follow-up); `stream` gives server-sent
        events: `text` with each checked sentence, then `answer` with the whole document."""
        messages = [Message(t.role, t.content) for t in body.messages if t.role in ("user", "assistant")]
        request.state.question = messages[-1].content if messages else ""
        if not body.stream:
            answer = assistant.chat(messages, body.filters())
            metrics.answered(answer, "chat")
            return answer.to_dict()
        stream = assistant.stream_chat(messages, body.filters())

        def events() -> Iterator[str]:
            try:
                for piece in stream:
                    yield f"event: text\ndata: {json.dumps({'text': piece}, ensure_ascii=False)}\n\n"
                answer = stream.result()
            except Exception as exc:  # headers are sent: the error is an event
                LOG.exception("stream failed")
                yield f"event: error\ndata: {json.dumps({'message': f'{type(exc).__name__}: {exc}'})}\n\n"
                return
            metrics.answered(answer, "chat")
            yield f"event: answer\ndata: {json.dumps(answer.to_dict(), ensure_ascii=False)}\n\n"
        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/articles/{article_id}", response_model=ArticleDoc, dependencies=[guard], tags=["articles"])
    def article(article_id: str) -> dict:
        """An article's metadata and full text (every citation's quote is a span of it): `rag show --json`."""
        found = assistant.article(article_id)
        if found is None:
            raise ApiError(404, f"no article with id {article_id}", code="article_not_found", param="article_id")
        return found.to_dict()

    @app.get("/v1/stats", dependencies=[guard], tags=["articles"])
    def stats() -> dict:
        """What the index holds: `rag stats --json`."""
        return assistant.stats()


def _index_routes(app: FastAPI, assistant: Assistant, settings: Settings, guard) -> None:
    writing = threading.Lock()  # one write at a time from this process; others wait here, not on the file lock
    uploads = Path(assistant.stats()["index_dir"]) / "uploads"

    def index_one(item: str, target: Path | str) -> dict:
        with writing:
            try:
                report = assistant.index([target], allow_private=settings.api_allow_private_urls)
            except IndexError_ as exc:
                return {"item": item, "error": str(exc)}
        return report_doc(item, report)

    @app.post("/v1/index", response_model=IndexDoc, response_model_exclude_none=True, dependencies=[guard],
              tags=["articles"], openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": IndexUrls.model_json_schema()},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
    async def index(request: Request) -> dict:
        """Index uploaded files (multipart, the formats `rag index` takes) or the pages and feeds of
        `{"urls": [...]}`; one result per item. Answers use them at once (no restart)."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return {"results": await _index_uploads(request, settings, uploads, index_one)}
        try:
            body = IndexUrls.model_validate(await request.json())
        except ValueError as exc:
            raise ApiError(400, f"send multipart files or JSON {{\"urls\": [...]}} ({exc})") from None
        results = []
        for url in body.urls:
            if not url.lower().startswith(("http://", "https://")):
                results.append({"item": url, "error": "not an http(s) url"})
                continue
            results.append(await run_in_threadpool(index_one, url, url))
        return {"results": results}

    @app.delete("/v1/articles/{article_id}", response_model=RemovedDoc, dependencies=[guard], tags=["articles"])
    def remove(article_id: str) -> dict:
        """Delete an article from every part of the index; indexing its folder again does not bring it back."""
        with writing:
            removed = assistant.remove([article_id])
        if not removed:
            raise ApiError(404, f"no article with id {article_id}", code="article_not_found", param="article_id")
        return {"removed": removed}


async def _index_uploads(request: Request, settings: Settings, uploads: Path, index_one) -> list[dict]:
    form = await request.form(max_files=settings.api_max_upload_files, max_fields=10)
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise ApiError(400, "no files in the upload (send them as multipart form field `files`)", param="files")
    results = []
    uploads.mkdir(parents=True, exist_ok=True)
    for upload in files:
        name = safe_name(upload.filename or "")
        if suffix_of(Path(name)) not in SUFFIXES:
            results.append({"item": name, "error": f"unsupported format; give one of {', '.join(SUFFIXES)}"})
            continue
        target = uploads / name
        target.write_bytes(await upload.read())
        results.append(await run_in_threadpool(index_one, name, target))
    await form.close()
    return results


def _openai_routes(app: FastAPI, assistant: Assistant, metrics: Metrics, guard) -> None:
    created = int(time.time())
    model_doc = {"id": MODEL, "object": "model", "created": created, "owned_by": "rag-news"}

    @app.get("/v1/models", dependencies=[guard], tags=["openai"])
    def models() -> dict:
        return {"object": "list", "data": [model_doc]}

    @app.get("/v1/models/{model}", dependencies=[guard], tags=["openai"])
    def model(model: str) -> dict:
        _check_model(model)
        return model_doc

    @app.post("/v1/chat/completions", dependencies=[guard], tags=["openai"],
              responses={200: {"content": {"text/event-stream": {}}}})
    def completions(body: OpenAIChatRequest, request: Request):
        """OpenAI's chat completions: the cited answer to the last user turn, its sources in the content
        and as top-level `citations` (on the last chunk when streamed)."""
        _check_model(body.model)
        for name in ("tools", "functions"):
            if getattr(body, name):
                raise ApiError(400, f"'{name}' is not supported: this model answers from news articles with "
                               "citations and calls no tools", param=name, code="unsupported_parameter")
        messages = [Message(m.role, m.text()) for m in body.messages if m.role in ("user", "assistant")]
        request.state.question = messages[-1].content if messages else ""
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if not body.stream:
            answer = assistant.chat(messages)
            metrics.answered(answer, "chat.completions")
            return _completion(ident, answer)
        stream = assistant.stream_chat(messages)
        return StreamingResponse(_chunks(ident, stream, metrics), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})


def _check_model(model: str) -> None:
    if model != MODEL:
        raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       code="model_not_found", param="model")


def _completion(ident: str, answer: Answer) -> dict:
    return {
        "id": ident, "object": "chat.completion", "created": int(time.time()), "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content_with_sources(answer), "refusal": None}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "citations": [c.to_dict() for c in answer.citations],
    }


def _chunks(ident: str, stream, metrics: Metrics) -> Iterator[str]:
    """OpenAI's `chat.completion.chunk` events: the role, the checked sentences, the sources, then the
    finish chunk carrying `citations`, then `[DONE]`."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        doc = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": MODEL,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in stream:
            yield chunk({"content": piece})
        answer = stream.result()
    except Exception as exc:  # headers are sent: OpenAI's clients read an error event
        LOG.exception("stream failed")
        error = {"message": f"{type(exc).__name__}: {exc}", "type": "server_error", "param": None, "code": None}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    metrics.answered(answer, "chat.completions")
    sources = sources_text(answer)
    if sources:
        yield chunk({"content": f"\n\n{sources}"})
    yield chunk({}, "stop", citations=[c.to_dict() for c in answer.citations])
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------- `rag serve`


def refusal(host: str, settings: Settings) -> str:
    """Why the server may not start as configured ("" when it may)."""
    try:
        keys = load_keys(settings)
    except ValueError as exc:
        return str(exc)
    if not keys and not is_loopback(host):
        return (f"--host {host}: without API keys the HTTP API only binds to loopback (127.0.0.1), as anyone who "
                "can reach it could read and change the index; set RAG_API_KEYS=KEY[,KEY...] or RAG_API_KEYS_FILE")
    return ""


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`rag serve`: open the index (created empty when missing), then serve until Ctrl-C."""
    import uvicorn

    from rag.api import open_assistant

    why = refusal(args.host, settings)
    if why:
        raise UserError(why)
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
    assistant = open_assistant(settings, must_exist=False)
    stats = assistant.stats()
    shown = "localhost" if is_loopback(args.host) else args.host
    print(f"{stats['articles']} articles, {stats['chunks']} passages in {stats['index_dir']}; HTTP API at "
          f"http://{shown}:{args.port}/v1 (docs: /docs)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(build_app(assistant, settings), host=args.host, port=args.port, log_level="warning",
                    access_log=False, timeout_graceful_shutdown=5)
    finally:
        assistant.close()
    return 0
