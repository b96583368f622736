"""Settings: one pydantic-settings object, read once in `main()` and passed down.

Environment variables use the prefix `RAG_` (e.g. `RAG_INDEX_DIR`). Library
code never reads `os.environ` itself; this module does not load models.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the pipeline, with sane defaults."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    index_dir: Path = Path("index")
    # Chroma server mode (`chroma run`): vectors in a server collection, SQLite and BM25 still in index_dir.
    # Empty host: an embedded Chroma in index_dir/chroma. Headers: JSON object, e.g. for an auth proxy.
    chroma_host: str = ""
    chroma_port: int = 8000
    chroma_ssl: bool = False
    chroma_headers: dict[str, str] = Field(default_factory=dict)
    chroma_collection: str = "chunks"
    # team mode (RAG_DATABASE_URL, e.g. postgresql://user:pass@host:5432/db): the catalogue and the writer lock in
    # PostgreSQL (rag.catalogue_pg, rag.lock_pg), one schema per collection; needs a Chroma server for the vectors
    database_url: SecretStr | None = None
    # "provider:model": sentence-transformers:NAME_OR_PATH or model2vec:PATH
    embedder: str = "sentence-transformers:all-MiniLM-L6-v2"
    # where derived models (distilled static embedders) are kept
    cache_dir: Path = Path.home() / ".cache" / "rag-news"
    # bf16 autocast where the CPU has native bf16 (AVX512-BF16 or AMX); "auto"|"bf16"|"fp32"
    precision: str = "auto"
    embed_batch_size: int = 64
    index_batch_chunks: int = 512  # chunks embedded and committed together by `rag index`
    # how much of one file `rag index` reads (rag.ingest.Limits): a larger file is refused; a .jsonl.gz is
    # decompressed as it is read and cut (the rest skipped, with the reason) at RAG_DECOMPRESSION_RATIO times its
    # compressed size (at least 16 MB, at most RAG_MAX_DECOMPRESSED_MB); a longer JSON line is skipped
    max_file_mb: int = Field(default=200, gt=0)
    max_decompressed_mb: int = Field(default=1024, gt=0)
    decompression_ratio: float = Field(default=20.0, gt=0)
    max_line_mb: int = Field(default=50, gt=0)
    # seconds between two progress lines of `rag index` when stderr is not a terminal (RAG_PROGRESS_EVERY)
    progress_every: float = Field(default=10.0, gt=0)
    chunk_tokens: int = 160  # tiktoken tokens of article text per chunk
    chunk_overlap: int = 24  # tokens repeated from the previous chunk
    top_k: int = 8  # chunks returned by search
    # weight of dense vs BM25 scores; None: chosen for the embedder (a static model is weaker)
    dense_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    # asked with dates on (not an archive search), a question that names no period of its own ranks newer
    # reports first: an article published as of today gains this (a fused score is 0-1), halved every
    # RAG_RECENCY_HALF_LIFE_DAYS of age; 0 turns it off
    recency_weight: float = Field(default=0.3, ge=0.0)
    recency_half_life_days: float = Field(default=7.0, gt=0)
    max_question_chars: int = 2000
    answer_sentences: int = 4
    # below this evidence score the assistant abstains
    abstain_threshold: float = 0.3
    # answers: "extractive" (no LLM), "openai:MODEL" (any OpenAI-compatible server) or "ollama:MODEL" (RAG_LLM)
    llm: str = "extractive"
    llm_timeout: float = Field(default=60.0, gt=0)  # seconds to wait for the server (connect, and between tokens)
    llm_max_retries: int = Field(default=1, ge=0)  # retries of a failed request (OpenAI-compatible servers)
    # after the LLM fails, seconds it is not asked (extractive answers at once, with a notice), doubled for each
    # failure in a row up to 10 minutes and forgotten at the first success; 0: every question tries it
    # (RAG_LLM_RETRY_AFTER)
    llm_retry_after: float = Field(default=30.0, ge=0)
    llm_temperature: float = Field(default=0.1, ge=0.0)
    llm_max_tokens: int = Field(default=600, gt=0)  # longest answer generated
    # a citation is kept only when its quote covers this share of the cited claim's (IDF-weighted) words
    llm_min_support: float = Field(default=0.2, ge=0.0, le=1.0)
    # an LLM answer is cut after this many checked sentences (RAG_LLM_MAX_SENTENCES; default 3 x answer_sentences)
    # or characters (RAG_LLM_MAX_CHARS; default 300 per sentence of that cap); reading the reply stops there
    llm_max_sentences: int | None = Field(default=None, ge=1)
    llm_max_chars: int | None = Field(default=None, ge=1)
    # seconds an LLM call may take in all, however the server trickles its reply (RAG_LLM_DEADLINE); past it the
    # answer is extractive, with a notice (a stream keeps the checked sentences it showed, if any)
    llm_deadline: float = Field(default=60.0, gt=0)
    # the usual variables of the OpenAI and Ollama clients, without the RAG_ prefix (RAG_-prefixed ones work too)
    openai_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("RAG_OPENAI_API_KEY", "OPENAI_API_KEY"))
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", validation_alias=AliasChoices("RAG_OPENAI_BASE_URL", "OPENAI_BASE_URL"))
    ollama_host: str = Field(
        default="http://127.0.0.1:11434", validation_alias=AliasChoices("RAG_OLLAMA_HOST", "OLLAMA_HOST"))
    # web chat login "user:password" (RAG_WEB_AUTH); needed to serve beyond 127.0.0.1 without a warning
    web_auth: str = ""
    # Slack bot (`rag slack`): Web API base URL (RAG_SLACK_API_URL), for proxies and tests. The tokens are
    # not settings: `ui.slack.main` reads SLACK_BOT_TOKEN, SLACK_APP_TOKEN and SLACK_SIGNING_SECRET.
    slack_api_url: str = "https://slack.com/api/"
    # HTTP API (`rag serve`). Keys: comma-separated (RAG_API_KEYS) and/or a file with one key a line ("#" comments);
    # without any, the server only binds to loopback. The rate limit is requests per minute per key (0: none).
    api_keys: SecretStr = SecretStr("")
    api_keys_file: Path | None = None
    api_rate_limit: int = Field(default=0, ge=0)
    api_cors_origins: list[str] = Field(default_factory=list)  # JSON list, e.g. '["https://chat.example"]'
    api_max_body_kb: int = Field(default=256, gt=0)  # JSON request bodies
    api_max_upload_mb: int = Field(default=25, gt=0)  # one multipart upload to /v1/index, all files together
    api_max_upload_files: int = Field(default=20, gt=0)
    # urls given to the server may be fetched from loopback, private and link-local addresses (tests, intranets)
    api_allow_private_urls: bool = False
    api_log_questions: bool = False  # the request log line carries the question text
    # a new index without RAG_EMBEDDER set has two stages: answerable after the fast model's pass, at the full
    # model's quality once every passage has its vector from it (`rag index` computes them after the fast pass)
    fast_embedder: str = "model2vec:all-MiniLM-L6-v2"  # RAG_FAST_EMBEDDER
    full_embedder: str = "onnx:all-MiniLM-L6-v2"  # RAG_FULL_EMBEDDER (int8 ONNX Runtime, see rag.embed_onnx)
    # an index call that reports no progress (uploads, the API) computes the full stage in the same call only when
    # at most this many passages lack their full-stage vector; `rag index` always does (RAG_STAGE_INLINE_CHUNKS)
    stage_inline_chunks: int = Field(default=2000, ge=0)
