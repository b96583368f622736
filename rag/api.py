"""The facade: `Assistant` is the one entry point for the CLI, web chat and Slack bot.

It wires settings to the stages (embed, store, index, retrieve, answer) and
returns the project's own frozen types. It holds no retrieval or answering
logic of its own and does not read the environment: pass `Settings`.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Generator
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rag.answer import QUESTION_WORDS, Extractive, is_abstention, looks_english
from rag.chunk import Chunker
from rag.config import Settings
from rag.dates import MONTHS, WEEKDAYS, find_range, later_year, without_phrase
from rag.embed import Embedder, make_embedder
from rag.enrich import Step, chain, enrich, respond
from rag.errors import IndexError_, UserError
from rag.errors import RagError as RagError  # the base of every error a front end may catch
from rag.lexical import outdated
from rag.llm import AnswerStream, make_answerer
from rag.retrieve import Recency, Retriever
from rag.store import TEAM_NEEDS_CHROMA, Store, index_exists, remove_index
from rag.types import Answer, Article, Filters, Hit, IndexReport, Message, QuestionDates
from rag.vectors import FULL, ChromaServer

if TYPE_CHECKING:
    from rag.index import Indexer, Progress

# the indexing side (rag.index and what it reads files with: YAML, dateutil) is imported when an index is written,
# not by a process that only answers; its names that front ends take from here are served by __getattr__
_FROM_INDEX = ("FULL_PHASE", "Stopped")


def __getattr__(name: str) -> object:
    """`FULL_PHASE` (the progress phase of the full stage) and `Stopped`, from `rag.index` when first named."""
    if name not in _FROM_INDEX:
        raise AttributeError(f"module 'rag.api' has no attribute {name!r}")
    import rag.index

    return getattr(rag.index, name)


@dataclass(frozen=True)
class _Turn:
    """One question made ready to answer: as asked, as searched (standalone, its time words taken out as
    the date filter, read as `asked`), its hits, the focus of a follow-up, an LLM failure met on the way and a
    notice for the reader (a question not in English, a search from BM25 alone)."""

    question: str
    searched: str
    hits: list[Hit]
    asked: QuestionDates | None = None
    focus: str = ""
    failure: Exception | None = None
    note: str = ""


class QuestionError(RagError, ValueError):
    """A question that cannot be asked (empty or too long)."""


class Assistant:
    """Index news articles and answer questions about them with cited quotes."""

    def __init__(self, store: Store, embedder: Embedder, settings: Settings, full: Embedder | None = None) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder  # the first (fast) stage's, or the only one's
        self.full = full  # a two-stage index: the full stage's (loaded when first used)
        if full is not None:
            store.check_full_embedder(full.name)
        store.check_embedder(embedder.name, embedder.dim)
        self.chunker = Chunker(settings.chunk_tokens, settings.chunk_overlap)
        self._generation = store.catalogue.generation()
        self._refresh_lock = threading.Lock()
        if store.shared:  # team mode: this host's lexical index is a cache of the shared catalogue
            store.sync_lexical_cache()
        self._retriever: Retriever | None = None  # built when first searched: `rag index` never needs it
        self._retriever_lock = threading.Lock()
        self.answerer = Extractive(
            tokens=lambda texts: self.retriever.lexical.words.tokens(texts),
            idf=lambda terms: self.retriever.lexical.idf(terms),
            max_sentences=settings.answer_sentences, threshold=settings.abstain_threshold,
            vocabulary=self._vocabulary, mentions=lambda ids, terms: self.retriever.mentions(ids, terms),
        )
        # with RAG_LLM=openai:MODEL or ollama:MODEL an LLM drafts the answer, grounded in the passages like any
        # answerer's (any object with `draft`, `rag.enrich.Answerer`, plugs in here)
        self.llm = make_answerer(settings, self.answerer, self.answerer.tokens, self.answerer.idf)

    @property
    def retriever(self) -> Retriever:
        """The retriever over the index as last loaded, built on first use (it reads the whole chunk table and
        the lexical index: seconds on a large collection, which a process that only indexes does not pay)."""
        with self._retriever_lock:
            if self._retriever is None:
                self._retriever = self._new_retriever()
            return self._retriever

    def _new_retriever(self) -> Retriever:
        settings, full = self.settings, self.full
        try:
            full_side = (full, dense_weight_for(full.name, settings.dense_weight)) if full is not None else None
            return Retriever(self.store, self.embedder, dense_weight_for(self.embedder.name, settings.dense_weight),
                             full_side)
        except (OSError, ValueError, KeyError) as exc:  # a half-written or damaged lexical index
            folder = self.store.dir
            raise IndexError_(f"the lexical index in {folder} cannot be read ({type(exc).__name__}: {exc}); "
                              f"rebuild it: `rag index --rebuild PATH... --index {folder}`") from None

    @classmethod
    def open(cls, index_dir: Path | str | None = None, settings: Settings | None = None,
             embedder: Embedder | None = None) -> Assistant:
        """Open (or create) the index in `index_dir`, loading the embedder once: the one the index was built
        with, unless `settings` sets one explicitly (RAG_EMBEDDER; a different one is then an IndexError_).

        Without an explicit embedder a new index has two stages (RAG_FAST_EMBEDDER, then RAG_FULL_EMBEDDER),
        and an index that records two keeps them; each stage's model is loaded when first used."""
        settings = settings or Settings()
        folder = Path(index_dir) if index_dir is not None else settings.index_dir
        store = open_store(folder, settings)
        try:
            full = None
            if embedder is None:
                embedder, full = stage_embedders(store, settings)
            assistant = cls(store, embedder, settings, full)
        except BaseException:
            store.close()
            raise
        assistant._upgrade_lexical()
        return assistant

    def _upgrade_lexical(self) -> None:
        """An index whose BM25 side is missing, of the earlier bm25s layout (before the incremental one) or
        tokenized by an earlier version's rules (`rag.lexical.outdated`) gets it built once, now, when its writer
        lock is free: searching without it would rank by vectors alone, and by the earlier rules "2.9" is no term.
        A busy or read-only index is answered as it is (BM25 by its own rules); its next `rag index` builds it."""
        catalogue = self.store.catalogue
        if self.store.shared:  # team mode: the cache was brought up to the catalogue when opened
            return
        if not catalogue.counts()[0] or not outdated(self.store.dir):
            return
        if catalogue.dirty():  # a run is writing it (a first build), or stopped: that run or the next builds it
            return
        try:
            self.index([])
        except IndexError_:
            pass

    def index(self, paths: list[Path | str], prune: bool = False, progress: bool = False,
              on_progress: Progress | None = None, allow_private: bool = True) -> IndexReport:
        """Index files and folders, and http(s) urls of RSS/Atom feeds or article pages (fetched into the index
        folder's `fetched/`, see `rag.feeds`; without `allow_private` only from public addresses); only new or
        changed articles are embedded. A file named here (not found in a folder) brings back what `remove` took
        out of it."""
        from rag.feeds import fetch_articles, is_url
        from rag.index import Indexer, host_key
        from rag.ingest import display_path, limits_from

        files, failed = [], []
        for p in paths:
            if is_url(str(p)):
                written, skipped = fetch_articles(str(p), self.store.dir / "fetched", allow_private=allow_private)
                files += written
                failed += skipped
            else:
                files.append(Path(p))
                if files[-1].is_file() and self.store.catalogue.restore_removed(display_path(files[-1])):
                    self.store.catalogue.forget_file(host_key(files[-1], self.store.shared))
        if failed and not files:
            return IndexReport(skipped=tuple(failed))
        indexer = Indexer(self.store, self.embedder, self.chunker, self.settings.index_batch_chunks,
                          limits=limits_from(self.settings), window=self.full, shared=self.store.shared,
                          full=self.full, ahead_chunks=self.settings.stage_inline_chunks)
        try:
            report = indexer.run(files, prune=prune, progress=progress, on_progress=on_progress)
            if failed:
                report = replace(report, skipped=tuple(failed) + report.skipped)
            self._full_stage(indexer, report, progress, on_progress)
        finally:
            with self._refresh_lock:
                if self._retriever is not None:
                    self._retriever.reload()
                self._generation = self.store.catalogue.generation()
        return report

    def _full_stage(self, indexer: Indexer, report: IndexReport, progress: bool,
                    on_progress: Progress | None) -> None:
        """A two-stage index: the full stage's vectors of every passage without one, in the same call when the
        caller shows progress (`rag index`, bench) or they are few (an upload to a complete index), so the
        dense side stays at full quality. Ctrl-C raises `Stopped` with the fast pass's report."""
        from rag.index import Stopped, run_quietly
        from rag.progress import ProgressPrinter

        if self.full is None:
            return
        batch_caller = progress or on_progress is not None
        if not batch_caller and indexer.full_backlog() > self.settings.stage_inline_chunks:
            return  # a long backlog is left to `rag index`: an upload must not wait for it
        show = on_progress or (ProgressPrinter(sys.stderr, self.settings.progress_every) if progress else run_quietly)
        try:
            indexer.run_full_stage(self.full, show)
        except KeyboardInterrupt:
            raise Stopped(report) from None
        except IndexError_ as exc:  # another writer kept the lock: the fast stage answers meanwhile
            if batch_caller:
                raise IndexError_(f"the full stage stopped ({exc}); the index answers from the fast stage, "
                                  "and the next `rag index` continues it") from None

    def remove(self, article_ids: list[str]) -> list[str]:
        """Delete articles from every part of the index (catalogue, vectors, lexical index, story groups) in one
        run, and keep them out of later runs of `index` until their file is named again; returns the ids removed
        (ids not in the index are left out)."""
        articles = [a for a in map(self.store.catalogue.article, dict.fromkeys(article_ids)) if a is not None]
        if not articles:
            return []
        self.store.lock.acquire()
        try:
            self.store.catalogue.set_dirty()  # the run below then rebuilds the lexical index and story groups
            self.store.catalogue.mark_removed(articles)
            for article in articles:
                self.store.delete_article(article.id)
        finally:
            self.store.lock.release()
        self.index([])
        return [a.id for a in articles]

    def generation(self) -> int:
        """The index's generation: bumped by every completed write (for monitoring and caches)."""
        return self.store.catalogue.generation()

    def refresh(self) -> bool:
        """Pick up what another process indexed (one SQLite read when nothing changed); True if reloaded.

        Waits for nothing: while another process is writing, the last complete state is served. In team mode
        this host's lexical cache is brought up to the catalogue first (the bulk of it while writers may run,
        what they committed meanwhile once none does)."""
        generation = self.store.catalogue.generation()
        if generation == self._generation:
            return False
        with self._refresh_lock:
            if generation == self._generation:
                return False
            if self.store.shared:
                self.store.sync_lexical_cache()
            with self.store.lock.quiet() as quiet:
                if not quiet:
                    return False
                if self.store.shared:
                    self.store.sync_lexical_cache()
                built = self._retriever is not None  # one not built yet reads the new state when it is
                self.store.reopen_vectors(self.retriever.dense_stage())
                if built:
                    self.retriever.reload()
                self._generation = self.store.catalogue.generation()
        return True

    def search(self, question: str, k: int | None = None, filters: Filters | None = None,
               one_copy: bool = True) -> list[Hit]:
        """The best passages for a question, grouped by article, best first; with `one_copy`, a story
        republished by several outlets (near-duplicate text) fills one place, its best-ranked copy's."""
        question = self._checked(question)
        self.refresh()
        return self.retriever.search(question, k or self.settings.top_k, filters, one_copy=one_copy)

    def ask(self, question: str, filters: Filters | None = None, k: int | None = None,
            use_llm: bool = True, dates: bool = True, today: date | None = None) -> Answer:
        """An answer with citations (by the configured LLM unless `use_llm` is False, else extractive),
        or an abstention. With `dates`, time words in the question ("this week", "in March 2022") become
        the date filter when `filters` has no dates (see `question_dates`), counted from `today` (the
        real today when None: `rag bench` asks each quiz question as on its date)."""
        return self._answer(self._turn(question, filters, k, dates, today), use_llm)

    def chat(self, messages: list[Message], filters: Filters | None = None, dates: bool = True) -> Answer:
        """Answer the last user message, using earlier turns to complete a follow-up."""
        return self._answer(self._follow_up(messages, filters, dates))

    def stream(self, question: str, filters: Filters | None = None, k: int | None = None,
               dates: bool = True, today: date | None = None) -> AnswerStream:
        """The answer as it is written: iterate for text pieces (the LLM's tokens, or the extractive answer
        sentence by sentence); the stream's `answer` is the final, checked `Answer` once iterated."""
        return self._stream(self._turn(question, filters, k, dates, today))

    def stream_chat(self, messages: list[Message], filters: Filters | None = None,
                    dates: bool = True) -> AnswerStream:
        """`chat` as a stream (see `stream`)."""
        return self._stream(self._follow_up(messages, filters, dates))

    def _turn(self, question: str, filters: Filters | None, k: int | None, dates: bool,
              today: date | None = None) -> _Turn:
        question = self._checked(question)
        self.refresh()
        searched, filters, asked = (self.question_dates(question, filters, today) if dates
                                    else (question, filters, None))
        if dates and today is not None:
            filters = _as_of(filters, today)
        hits = self.retriever.search(searched, k or self.settings.top_k, filters,
                                     recency=self._recency(asked, today) if dates else None)
        return _Turn(question, searched, hits, asked, note=_joined(hits.notice, self._language_note(question)))

    def _answer(self, turn: _Turn, use_llm: bool = True) -> Answer:
        """The turn's answer by the one pipeline (`rag.enrich.respond`: gated, drafted, grounded, enriched),
        drafted by the configured answerer (`self.llm`) unless `use_llm` is False, else the extractive one."""
        answerer = self.llm if use_llm and self.llm is not None else self.answerer
        # the follow-up's rewrite found the LLM failing: it is not waited for again
        draft = partial(answerer.draft, failure=turn.failure) if turn.failure and answerer is self.llm \
            else answerer.draft
        answer = respond(draft, turn.searched, turn.hits, self.answerer.tokens, self.answerer.idf,
                         self._gate, self._steps(turn), turn.focus, turn.asked is not None,
                         self.settings.llm_min_support,
                         # the extractive answer lists every hit retrieved (`rag bench` scores retrieval from it);
                         # another, the passages it was given
                         turn.hits if answerer is self.answerer else None)
        return replace(answer, question=turn.question)

    def _stream(self, turn: _Turn) -> AnswerStream:
        """The turn's answer as it is written: an answerer that streams (the LLM) shows each sentence once it is
        grounded, then what enrichment adds; any other, its finished answer a run of quotes at a time."""
        missing, named = self._gate(turn.searched, turn.hits)
        if self.llm is None or missing or not hasattr(self.llm, "stream"):
            return AnswerStream.of(self._answer(turn))
        stream = self.llm.stream(turn.searched, named, turn.focus, turn.failure, turn.asked is not None)
        return _enriched(stream, self._steps(turn)).asked(turn.question)

    def _steps(self, turn: _Turn) -> list[Step]:
        return chain(self.answerer.tokens, self._gate, turn.asked, turn.note)

    def _gate(self, question: str, hits: list[Hit]) -> tuple[str, list[Hit]]:
        """("", the hits that may answer `question`), or the abstention saying why none does: it asks what happened
        in a year after the newest article ("Who won the 2024 election?" of a 2022 collection), or no article found
        mentions its names and numbers (`Extractive.naming`)."""
        newest = self.newest_published()
        year = later_year(question, newest)
        if year is not None and hits:
            return (f"Not found in the articles: the newest article is of {newest}, so none can say what happened in "
                    f"{year}."), hits
        return self.answerer.naming(question, hits)

    def _recency(self, asked: QuestionDates | None, today: date | None = None) -> Recency | None:
        """Newer reports first, as of today (or of the newest article, in a collection that stopped before
        today), unless the question names a period of its own ("in March 2022": that period is searched
        evenly) or the bonus is off (RAG_RECENCY_WEIGHT=0)."""
        if self.settings.recency_weight <= 0 or (asked is not None and not asked.reference_kind):
            return None
        reference = today or date.today()
        newest = self.newest_published()
        return Recency(min(reference, newest) if newest else reference, self.settings.recency_weight,
                       self.settings.recency_half_life_days)

    def newest_published(self) -> date | None:
        """The publication date of the newest indexed article (None when no article has one)."""
        ordinals = self.retriever.table.published_ord
        newest = int(ordinals.max()) if len(ordinals) else 0
        return date.fromordinal(newest) if newest > 0 else None

    def question_dates(self, question: str, filters: Filters | None, today: date | None = None
                       ) -> tuple[str, Filters | None, QuestionDates | None]:
        """(question without its time words, filters with their dates, what they were read as).

        Only when `filters` has no dates of its own, and not for a time after today. Relative words ("this week",
        "since Tuesday") count from today, or from the newest article's date when every article is older than the
        range they name."""
        if filters is not None and (filters.since or filters.until):
            return question, filters, None
        today = today or date.today()
        found = find_range(question, today)
        if found is None or (found.since is not None and found.since > today):
            # a time after today ("which chains plan to merge in 2024?") is when the event is to be, not when
            # it was reported: no article is published then, so it is searched as words, not as a filter
            return question, filters, None
        reference, kind = (today, "today") if found.relative else (None, "")
        newest = self.newest_published()
        if found.relative and newest is not None and found.since is not None and newest < found.since:
            found = find_range(question, newest) or found
            reference, kind = newest, "newest article"
        filters = replace(filters or Filters(), since=found.since, until=found.until)
        asked = QuestionDates(found.phrase, str(found.since or ""), str(found.until or ""),
                              str(reference or ""), kind)
        return without_phrase(question, found), filters, asked

    def _follow_up(self, messages: list[Message], filters: Filters | None, dates: bool = True) -> _Turn:
        """The last user message made ready to answer: searched as a standalone question, with its focus.

        A follow-up is made a standalone question by the LLM when one is configured (by the heuristic
        `standalone_question` otherwise, or when the LLM fails: the failure is passed on so the answer
        does not wait for the same server again)."""
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is None:
            raise QuestionError("no user message to answer")
        question = self._checked(messages[last].content)
        earlier = answered(messages[:last])
        previous = [m.content for m in earlier if m.role == "user"]
        standalone, focus = standalone_question(previous, question)
        failure = None
        if hasattr(self.llm, "standalone") and (standalone, focus) != (question, ""):  # what the heuristic calls one
            standalone, focus, failure = self.llm.standalone(earlier, question, (standalone, focus))
        self.refresh()
        asked = None
        if dates:
            standalone, filters, asked = self.question_dates(standalone, filters)
        hits = self.retriever.search(standalone, self.settings.top_k, filters,
                                     recency=self._recency(asked) if dates else None)
        return _Turn(question, standalone, hits, asked, focus, failure,
                     _joined(hits.notice, self._language_note(question)))

    def article(self, article_id: str) -> Article | None:
        return self.store.catalogue.article(article_id)

    def article_ids(self) -> list[str]:
        """Ids of every indexed article, sorted."""
        return self.store.catalogue.article_ids()

    def sources(self) -> list[str]:
        """Sources of the indexed articles, most articles first."""
        return self.store.catalogue.sources()

    def stories(self) -> dict[str, str]:
        """{article id: story id} of the articles that have syndicated copies."""
        return self.store.catalogue.stories()

    def remember(self, kind: str, key: str, until: float, now: float) -> bool:
        """Keep a key a bot has handled until the time `until`; False when it is kept already (and not expired at
        `now`): every process sharing this index's catalogue sees it (Slack replicas dedupe together)."""
        return self.store.catalogue.remember(kind, key, until, now)

    def remembered(self, kind: str, key: str, now: float) -> bool:
        return self.store.catalogue.remembered(kind, key, now)

    def add_feedback(self, record: dict) -> None:
        """Keep a reader's feedback (a JSON object) in the index's catalogue: replicas sharing it keep theirs
        in one place."""
        self.store.catalogue.add_feedback(record)

    def feedback(self) -> list[dict]:
        """Every feedback record kept, oldest first."""
        return self.store.catalogue.feedback()

    def stats(self) -> dict:
        """Counts and settings of the index; `story_groups`: stories found in more than one article (a wire
        story and its syndicated copies), `syndicated_copies`: the articles beyond the first of each."""
        articles, chunks = self.store.catalogue.counts()
        stories = self.store.catalogue.stories()
        groups = len(set(stories.values()))
        self.refresh()
        serving = self.full if self.retriever.stage == FULL and self.full is not None else self.embedder
        return {
            "articles": articles, "chunks": chunks, "story_groups": groups,
            "syndicated_copies": len(stories) - groups, "embedder": serving.name,
            "dim": serving.dim, "index_dir": str(self.store.dir),
            "sources": len(self.store.catalogue.sources()), "last_indexed": self.store.catalogue.meta("last_indexed"),
            **self._stage_stats(),
        }

    def _stage_stats(self) -> dict:
        """Which stage answers: "single" (one embedder), "fast" (full-stage vectors still being computed:
        `full_vectors` says how many of how many) or "full"."""
        if self.full is None:
            return {"stage": "single"}
        done, total = self.store.catalogue.full_progress()
        return {"stage": "full" if done >= total else "fast", "full_vectors": f"{done:,} of {total:,}",
                "fast_embedder": self.embedder.name, "full_embedder": self.full.name}

    def close(self) -> None:
        self.store.close()

    def _vocabulary(self) -> dict[str, int]:
        """The lexical index's terms (for "did you mean")."""
        return self.retriever.lexical.vocabulary()

    def _language_note(self, question: str) -> str:
        """A notice when the question does not look English and the embedder reads English only."""
        name = self.embedder.name
        if looks_english(question) or any(m in name.lower() for m in _MULTILINGUAL):
            return ""
        return (f"The question does not look English: the embedder ({name}) reads English, so passages may be "
                "missed; ask in English, or index with a multilingual RAG_EMBEDDER.")

    def _checked(self, question: str) -> str:
        question = " ".join(question.split())
        if not question:
            raise QuestionError("the question is empty")
        limit = self.settings.max_question_chars
        if len(question) > limit:
            raise QuestionError(f"the question is {len(question)} characters long; the limit is {limit}")
        return question


_MULTILINGUAL = ("multilingual", "labse", "bge-m3", "xlm")  # embedders that read more than English


def dense_weight_for(embedder: str, configured: float | None) -> float:
    """The configured fusion weight, else one measured for the kind of embedder.

    A static (model2vec) model adds little over BM25 on news (rag bench), so it
    gets a small say; MiniLM a larger one, though less than BM25's: on the shared
    corpus's complete two-stage index, 0.2-0.3 ranked best on both halves of the
    dev questions, as of their dates and undated (0.3 against 0.5: undated
    hit@5 0.726 vs 0.637, MRR@10 0.521 vs 0.482; as of: 0.883 vs 0.873).
    """
    if configured is not None:
        return configured
    return 0.1 if embedder.startswith("model2vec:") else 0.3


def _enriched(stream: AnswerStream, steps: list[Step]) -> AnswerStream:
    """The stream's grounded pieces, then what the enrichment steps append to its text (notes), returning the
    enriched answer: the pieces joined are its text."""
    if stream.answer is not None:
        return AnswerStream.of(enrich(stream.answer, steps))

    def pieces() -> Generator[str, None, Answer]:
        shown = ""
        for piece in stream:
            shown += piece
            yield piece
        answer = enrich(stream.result(), steps)
        if answer.text.startswith(shown) and len(answer.text) > len(shown):
            yield answer.text[len(shown):]
        return answer
    return AnswerStream(pieces(), None, stream.draft)


def _as_of(filters: Filters | None, today: date) -> Filters:
    """`filters` asked as on `today`: what was published later did not exist yet (unless the question asks
    about a period after it, which is left as asked)."""
    filters = filters or Filters()
    if filters.since and filters.since > today:
        return filters
    return replace(filters, until=min(filters.until or today, today))


def _joined(*notes: str) -> str:
    return " ".join(n for n in notes if n)


def stage_embedders(store: Store, settings: Settings) -> tuple[Embedder, Embedder | None]:
    """(first stage's embedder, full stage's or None) for an index: the explicit RAG_EMBEDDER alone; else the
    one or two the index records; else, for a new index, RAG_FAST_EMBEDDER then RAG_FULL_EMBEDDER."""
    meta = store.catalogue.meta
    recorded = meta("embedder")
    explicit = "embedder" in settings.model_fields_set
    if explicit or (recorded and not store.two_stage()):
        spec = settings.embedder if explicit or not recorded else recorded
        return make_embedder(spec, settings.precision, settings.embed_batch_size, settings.cache_dir), None
    if recorded:
        full_dim = meta("full_embedder") and meta("full_dim")
        return (LazyEmbedder(recorded, settings, int(meta("dim") or 0) or None),
                LazyEmbedder(meta("full_embedder") or "", settings, int(full_dim) if full_dim else None))
    return LazyEmbedder(settings.fast_embedder, settings), LazyEmbedder(settings.full_embedder, settings)


_PROVIDERS = {"st": "sentence-transformers", "huggingface": "sentence-transformers", "static": "model2vec"}


class LazyEmbedder:
    """An embedder built on first use, so a process that never embeds with a stage's model never loads it; its
    name (and dimension, when the index records it) are known before. It does not embed by itself."""

    def __init__(self, spec: str, settings: Settings, dim: int | None = None) -> None:
        provider, _, model = spec.partition(":") if ":" in spec else ("sentence-transformers", "", spec)
        self.name = f"{_PROVIDERS.get(provider, provider)}:{model}"
        self.spec = spec
        self.settings = settings
        self._dim = dim
        self._model: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Embedder:
        with self._lock:
            if self._model is None:
                s = self.settings
                self._model = make_embedder(self.spec, s.precision, s.embed_batch_size, s.cache_dir)
            return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.model.dim

    @property
    def max_tokens(self) -> int:
        return self.model.max_tokens

    def embed(self, texts: list[str], progress: bool = False):
        return self.model.embed(texts, progress)

    def token_counts(self, texts: list[str]) -> list[int]:
        return self.model.token_counts(texts)


def chroma_server(settings: Settings) -> ChromaServer | None:
    """The Chroma server of `settings.chroma_host`, or None for vectors in the index folder."""
    return ChromaServer(settings.chroma_host, settings.chroma_port, settings.chroma_ssl,
                        dict(settings.chroma_headers)) if settings.chroma_host else None


def open_store(folder: Path, settings: Settings) -> Store:
    """The Store for `folder`, with its vectors on the Chroma server when `settings.chroma_host` is set; with
    `settings.database_url` (team mode) its catalogue and writer lock in PostgreSQL and `folder` a local cache
    (IndexError_ without a Chroma server)."""
    return Store(folder, chroma_server(settings), settings.chroma_collection,
                 settings.database_url if is_shared(settings) else None)


def is_shared(settings: Settings) -> bool:
    """Team mode: the index lives in PostgreSQL and a Chroma server, shared by every host (RAG_DATABASE_URL)."""
    return bool(_database_url(settings))


def _database_url(settings: Settings) -> str:
    url = settings.database_url
    return url.get_secret_value() if hasattr(url, "get_secret_value") else (url or "")


def has_index(settings: Settings) -> bool:
    """Whether the configured index was made (locally, or in team mode in the shared catalogue)."""
    if is_shared(settings) and not settings.chroma_host:
        raise IndexError_(TEAM_NEEDS_CHROMA)
    return index_exists(settings.index_dir, settings.database_url if is_shared(settings) else None,
                        settings.chroma_collection)


def missing_index_message(settings: Settings) -> str:
    """What to do when there is no index yet ("run `rag index` first", with where)."""
    if is_shared(settings):
        from rag.catalogue_pg import public_url

        where = public_url(_database_url(settings))
        return (f"no index in collection {settings.chroma_collection!r} of {where} yet: run `rag index [PATH...]` "
                "with the same RAG_DATABASE_URL, RAG_CHROMA_HOST and RAG_CHROMA_COLLECTION first")
    return f"no index in {settings.index_dir}: run `rag index [PATH...] --index {settings.index_dir}` first"


def open_assistant(settings: Settings, must_exist: bool = True) -> Assistant:
    """The facade for the configured index, for a front end; a missing index or a bad setting is a UserError."""
    from rag.llm import LLMConfigError

    try:
        if must_exist and not has_index(settings):
            raise UserError(missing_index_message(settings))
        return Assistant.open(settings.index_dir, settings)
    except (IndexError_, LLMConfigError) as exc:
        raise UserError(str(exc)) from None


def delete_index(settings: Settings, confirmed: bool = False) -> None:
    """Delete the configured index (`rag index --rebuild`), even a corrupt one; IndexError_ while a writer runs.
    A shared collection (team mode) is deleted for every host: only when `confirmed`, else a UserError."""
    shared = is_shared(settings)
    if shared and not confirmed:
        raise UserError(f"--rebuild deletes the shared collection {settings.chroma_collection!r} for every host (its "
                        "articles, vectors, feedback and what other hosts indexed into it); add --yes to do it")
    if shared and not settings.chroma_host:
        raise UserError(TEAM_NEEDS_CHROMA)
    remove_index(settings.index_dir, chroma_server(settings), settings.chroma_collection,
                 settings.database_url if shared else None)


def answered(messages: list[Message]) -> list[Message]:
    """The chat without its turns that abstained (the user message and the reply saying "not found"): their
    words are never carried into a follow-up."""
    kept: list[Message] = []
    for m in messages:
        if m.role == "assistant" and is_abstention(m.content):
            while kept and kept[-1].role == "user":
                kept.pop()
        else:
            kept.append(m)
    return kept


_FOLLOW_UP = re.compile(r"^(?:and|but|also|what about|how about|and what about)\b[\s,]*(.*)$", re.I)
_PREPOSITION = re.compile(r"\b(in|at|on|for|to|from|of|about|with|near|around)\b", re.I)
# words that point back to an earlier turn ("what did he say there?")
_REFERENCE = re.compile(r"\b(?:it|its|he|him|his|she|her|they|them|their|there|this|that|these|those)\b", re.I)
_WORD = re.compile(r"[^\W\d_][\w'\u2019-]*")
_CAPITALISED = re.compile(r"(?<=\s)[A-Z][\w'\u2019-]*")
# what a preposition may be followed by without naming anything ("in the city", "on Tuesday", "in which")
_NOT_NAMING = frozenset([*QUESTION_WORDS, *MONTHS, *WEEKDAYS, "the", "a", "an", "this", "that", "these", "those",
                         "it", "him", "her", "them", "there", "me", "us", "his", "its", "their", "my", "our",
                         "yesterday", "tomorrow", "morning", "night", "last", "next", "each", "all", "any", "i"])
_FUNCTION = frozenset([*_NOT_NAMING, "is", "are", "was", "were", "be", "been", "did", "do", "does", "has", "have",
                       "had", "will", "would", "can", "could", "should", "and", "or", "but", "not", "then",
                       "after", "before", "so", "about", "in", "at", "on", "for", "to", "from", "of", "with",
                       "near", "around", "many", "much", "more", "else", "happens", "they", "he", "she", "we"])


def standalone_question(previous: list[str], question: str) -> tuple[str, str]:
    """(search question, focus): `question` completed from the earlier questions, each resolved in turn.

    Earlier turns fill in only what the question lacks: "and in Kherson?" after "what happened in Mariupol?"
    becomes "what happened in Kherson?" (focus "Kherson"); "who is the mayor?" or "why?" get the earlier
    question's subject. A question naming its own place, person or topic ("what happend in mariupol", "what
    did Kolyhav say?") stands alone, misspelt or not. Pass only the questions of turns that were answered
    (see `answered`).
    """
    context = ""
    for earlier in previous:
        context = _completed(context, earlier)[0]
    return _completed(context, question)


def _completed(context: str, question: str) -> tuple[str, str]:
    if not context:
        return question, ""
    last = context.rstrip(" ?.!")
    match = _FOLLOW_UP.match(question)
    if match:  # elliptic: the earlier question with the new part in place of its own
        rest = match.group(1).strip(" ?.!")
        if not rest:
            return context, ""
        prep = _PREPOSITION.match(rest)
        if prep:
            spots = [m for m in _PREPOSITION.finditer(last) if m.group(1).lower() == prep.group(1).lower()]
            if spots:
                return f"{last[:spots[-1].start()]}{rest}?", rest[prep.end():].strip()
        names = list(_CAPITALISED.finditer(" " + last))
        if names and all(w[:1].isupper() for w in rest.split()):  # "what about Dovrin?": a new name for the old
            return f"{last[:names[-1].start() - 1]}{rest}{last[names[-1].end() - 1:]}?", rest
        return f"{last} {rest}?", rest
    if _names_itself(question) and not _REFERENCE.search(question):
        return question, ""
    rest = question.strip(" ?.!")
    has_topic = any(w.lower() not in _FUNCTION for w in _WORD.findall(rest))
    return f"{last} {rest}?", rest if has_topic else ""


def _names_itself(question: str) -> bool:
    """Whether the question names a place, person or topic of its own: a capitalised word after the first, or a
    word after a preposition ("in mariupol"), not a time or a pointer ("in the city", "on Tuesday")."""
    if any(w.lower() not in _NOT_NAMING for w in _CAPITALISED.findall(question)):
        return True
    words = [w.lower() for w in _WORD.findall(question)]
    return any(a in _PREPOSITION_WORDS and b not in _NOT_NAMING for a, b in zip(words, words[1:]))


_PREPOSITION_WORDS = frozenset("in at on for to from of about with near around".split())
