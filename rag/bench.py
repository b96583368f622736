"""Bench: measure the real pipeline on a news QA benchmark, optionally beside two peers.

`rag bench BENCH_DIR` indexes `BENCH_DIR/articles.jsonl.gz` into a fresh
temporary index with `Assistant.index`, re-indexes it unchanged, then asks every
question through `Assistant.ask` in three modes and scores article ranks (hit@k,
MRR@10) and answer text (contains the correct choice / a wrong one / "not found"):
undated (no dates at all: an archive search), dated (the date filter of a weekly
quiz: from 14 days before the question's date to that date) and as-of (the
headline: each question asked as on its quiz date, `ask(question, today=date)`,
with the assistant's own reading of time words). Questions marked
`"answerable": false` (no gold) are scored by how often the answer is "not found".
`--peer` runs two LlamaIndex pipelines on the same data (see `rag.peer`): the
quick-start and the recommended BM25 + vector hybrid; they have no date handling,
so their as-of figures are their undated ones (asked as a user asks, the question
as typed). For all, a gold article counts as found when it or a syndicated copy of
it is (the copies our index grouped: the same text under another outlet's name).

It reads the benchmark where it lies and copies nothing into the project;
it does not tune anything.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TextIO

import psutil
from tqdm import tqdm

from rag.config import Settings
from rag.types import Filters

RETRIEVAL = ("hit@1", "hit@5", "hit@10", "mrr@10")
ANSWERS = ("answer_correct", "answer_wrong", "abstained", "unanswerable_abstained")
QUALITY = RETRIEVAL + ANSWERS
MODES = ("undated", "dated", "as_of")  # undated figures are the top-level keys, the others their own dicts
# the project's own questions for a benchmark, beside its questions-dev.jsonl: benchmarks/unanswerable-<dir>.jsonl
BUNDLED = Path(__file__).resolve().parents[1] / "benchmarks"


@dataclass(frozen=True)
class Reply:
    """What one ask gave: articles best first (id, title), the answer text, whether it said "not found",
    and the dates its time words were read as (as-of mode)."""

    articles: list[tuple[str, str]]
    text: str = ""
    abstained: bool = False
    dates: dict | None = None


Asker = Callable[[dict, str], Reply]  # (question record, mode) -> reply


def main(args: argparse.Namespace, settings: Settings) -> int:
    files = questions_files(args.bench_dir, args.questions)
    missing = [p for p in [args.bench_dir / "articles.jsonl.gz", *files] if not p.is_file()]
    if missing:
        print(f"rag: {missing[0]}: no such file (BENCH_DIR holds articles.jsonl.gz and questions-dev.jsonl)",
              file=sys.stderr)
        return 2
    lacking = peer_lacking() if args.peer else ""
    if lacking:
        print(f"rag: --peer needs {lacking}", file=sys.stderr)
        return 2
    with open(args.details, "w", encoding="utf-8") if args.details else nullcontext() as details:
        result = run(args.bench_dir, files, args.peer, args.limit, settings, details)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


def peer_lacking() -> str:
    """What the peers need and is not installed ("" when nothing): found before minutes of indexing."""
    if importlib.util.find_spec("llama_index.embeddings.huggingface") is None:
        return "the peer extra: .venv/bin/pip install -e '.[peer]'"
    if importlib.util.find_spec("llama_index.retrievers.bm25") is None:
        # its pystemmer<3 pin would downgrade the stemmer our own BM25 uses
        return "llama-index-retrievers-bm25: .venv/bin/pip install --no-deps llama-index-retrievers-bm25"
    return ""


def questions_files(bench_dir: Path, given: list[Path] | Path | None) -> list[Path]:
    """The files asked: those given, else the benchmark's questions-dev.jsonl and, when the project has one
    for this benchmark, its unanswerable questions."""
    if given:
        return list(given) if isinstance(given, list) else [given]
    bundled = BUNDLED / f"unanswerable-{bench_dir.resolve().name}.jsonl"
    return [bench_dir / "questions-dev.jsonl", *([bundled] if bundled.is_file() else [])]


def run(bench_dir: Path, questions_file: list[Path] | Path | None, peer: bool, limit: int | None,
        settings: Settings, details: TextIO | None = None) -> dict:
    """Index, re-index and ask; returns the `--json` document (and writes `details`: one JSON line per
    question, system and mode)."""
    articles_file = bench_dir / "articles.jsonl.gz"
    files = questions_files(bench_dir, questions_file)
    questions = [q for f in files for q in load_questions(f)]
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        source = articles_file
        if limit:
            source, kept = slice_articles(articles_file, Path(tmp) / "articles.jsonl.gz", limit, questions)
            questions = [q for q in questions if set(q["gold_ids"]) <= kept]
        n_articles, ours_id = id_map(source)
        questions = [{**q, "gold_ids": [ours_id.get(g, g) for g in q["gold_ids"]]} for q in questions]
        corpus = {"articles_file": str(articles_file), "articles": n_articles,
                  "questions": sum(answerable(q) for q in questions),
                  "unanswerable": sum(not answerable(q) for q in questions),
                  "questions_files": [str(f) for f in files]}
        ours, stories = run_ours(source, questions, Path(tmp) / "ours", settings, details)
        result = {"corpus": corpus, "ours": ours}
        if peer:
            golden = [q for q in with_copies(questions, stories) if answerable(q)]
            result["peer"] = run_peer("quickstart", source, ours_id, golden, Path(tmp) / "peer", details)
            result["peer_hybrid"] = run_peer("hybrid", source, ours_id, golden, Path(tmp) / "hybrid", details)
    return result


def load_questions(path: Path) -> list[dict]:
    """A questions file's records; an unanswerable one (`"answerable": false`) needs no gold nor choices."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    defaults = {"gold_ids": [], "answer": [], "choices": [], "date": ""}
    return [{**defaults, **r} for r in records]


def answerable(question: dict) -> bool:
    return question.get("answerable", True) is not False and bool(question["gold_ids"])


def slice_articles(src: Path, dst: Path, limit: int, questions: list[dict]) -> tuple[Path, set[str]]:
    """`limit` articles as their own file, and their ids.

    The gold articles of the first questions come first, so a small slice still
    has questions to ask; the rest of the slice is the file's first articles.
    """
    with gzip.open(src, "rt", encoding="utf-8") as fin:
        lines = {json.loads(line).get("id", ""): line for line in fin if line.strip()}
    wanted = list(dict.fromkeys(g for q in questions for g in q["gold_ids"] if g in lines))[: limit // 2]
    wanted += [i for i in lines if i not in set(wanted)][: limit - len(wanted)]
    with gzip.open(dst, "wt", encoding="utf-8") as fout:
        fout.writelines(lines[i] for i in wanted)
    return dst, set(wanted)


def id_map(path: Path) -> tuple[int, dict[str, str]]:
    """(article count, benchmark id -> the id our ingest gives the article)."""
    from rag.ingest import article_id

    mapping: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                item = json.loads(line)
                mapping[item.get("id", "")] = article_id(item["url"], "") if item.get("url") else item.get("id", "")
    return len(mapping), mapping


class PeakRSS:
    """Samples this process's resident memory while a block runs (MB)."""

    def __enter__(self) -> PeakRSS:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss / 2**20)
            self._stop.wait(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def with_copies(questions: list[dict], stories: dict[str, str]) -> list[dict]:
    """The questions with the syndicated copies of their gold articles (`stories`: article id -> story id)
    counted as gold too: the same text under another outlet's name is the same evidence."""
    members: dict[str, set[str]] = {}
    for article_id, story in stories.items():
        members.setdefault(story, set()).add(article_id)
    return [{**q, "gold_ids": sorted({g for gold in q["gold_ids"] for g in members.get(stories.get(gold), {gold})}
                                     | set(q["gold_ids"]))} for q in questions]


def run_ours(source: Path, questions: list[dict], index_dir: Path, settings: Settings,
             details: TextIO | None = None) -> tuple[dict, dict]:
    """Our figures, and the story groups the index found (article id -> story id)."""
    from rag.api import FULL_PHASE, Assistant
    from rag.progress import ProgressPrinter

    printer = ProgressPrinter(sys.stderr, settings.progress_every)
    answerable: list[float] = []  # when a two-stage index's full stage began: the fast pass made it answerable

    def heard(stage: str, done: int, total: int) -> None:
        if stage == FULL_PHASE and not answerable:
            answerable.append(time.perf_counter())
        printer(stage, done, total)

    with PeakRSS() as rss:  # across every stage
        assistant = Assistant.open(index_dir, settings)
        started = time.perf_counter()
        report = assistant.index([source], on_progress=heard)
        full_quality_s = time.perf_counter() - started
    index_s = (answerable[0] if answerable else started + full_quality_s) - started
    started = time.perf_counter()
    assistant.index([source])
    reindex_s = time.perf_counter() - started
    stats = assistant.stats()
    stories = assistant.stories()
    questions = with_copies(questions, stories)

    def ask(q: dict, mode: str) -> Reply:
        # the extractive answer, whatever RAG_LLM says. Undated and dated: dates=False, the question's time
        # words filter nothing ("this week" in a quiz question); as-of: the assistant reads them itself,
        # counted from the quiz's date
        k = max(20, settings.top_k)
        if mode == "as_of":
            answer = assistant.ask(q["question"], k=k, use_llm=False, today=quiz_date(q["date"]))
        else:
            filters = quiz_filter(q["date"]) if mode == "dated" else None
            answer = assistant.ask(q["question"], filters=filters, k=k, use_llm=False, dates=False)
        articles = list(dict.fromkeys((h.article.id, h.article.title) for h in answer.hits))
        return Reply(articles, answer.text, answer.abstained, answer.dates.to_dict() if answer.dates else None)

    if questions:
        ask(questions[0], "undated")  # warm-up: caches, lazy imports
    scored = {mode: score(ask, questions, mode, "ours", details) for mode in MODES}
    assistant.close()
    quality, times = scored["undated"]
    return {
        # index_s: until answerable (a two-stage index's fast pass); full_quality_s: until every stage is done,
        # the quality figures' index (one stage: the same)
        "index_s": round(index_s, 2), "full_quality_s": round(full_quality_s, 2), "reindex_s": round(reindex_s, 3),
        "stage": stats["stage"], "articles": stats["articles"], "chunks": stats["chunks"],
        "story_groups": stats["story_groups"],
        "chunks_per_s": round(report.chunks_embedded / full_quality_s, 1) if full_quality_s else 0.0,
        "peak_rss_mb": round(rss.peak, 1), **quality, **latency(times),
        "dated": scored["dated"][0], "as_of": scored["as_of"][0],
    }, stories


def score(ask: Asker, questions: list[dict], mode: str, system: str,
          details: TextIO | None = None) -> tuple[dict, list[float]]:
    """Article-level ranks and answer checks over the answerable questions, the share of "not found" among
    them and among the unanswerable ones (None when there are none), plus each ask's time."""
    ranks: list[int | None] = []
    verdicts: list[str] = []
    refused: list[bool] = []
    times: list[float] = []
    for q in tqdm(questions, desc=f"{system}, {mode}", unit="q", file=sys.stderr, leave=False):
        started = time.perf_counter()
        reply = ask(q, mode)
        times.append((time.perf_counter() - started) * 1000)
        ids = [a for a, _ in reply.articles]
        if answerable(q):
            gold = set(q["gold_ids"])
            ranks.append(next((i for i, a in enumerate(ids[:10], 1) if a in gold), None))
            verdicts.append(verdict(reply, q))
        else:
            refused.append(reply.abstained)
        if details:
            details.write(json.dumps(detail(q, reply, mode, system), ensure_ascii=False) + "\n")
    n = max(len(ranks), 1)
    quality = {f"hit@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 3) for k in (1, 5, 10)}
    quality["mrr@10"] = round(sum(1 / r for r in ranks if r) / n, 3)
    quality["answer_correct"] = round(sum(v in ("correct", "mixed") for v in verdicts) / n, 3)
    quality["answer_wrong"] = round(sum(v in ("wrong", "mixed") for v in verdicts) / n, 3)
    quality["abstained"] = round(verdicts.count("abstained") / n, 3)
    quality["unanswerable_abstained"] = round(sum(refused) / len(refused), 3) if refused else None
    return quality, times


def verdict(reply: Reply, q: dict) -> str:
    """abstained (said "not found"), correct (a correct choice, no wrong one), wrong (a wrong choice, no
    correct one), mixed (both) or missed (neither); "" for a peer, which writes no answer."""
    if reply.abstained:
        return "abstained"
    if not reply.text:
        return ""
    has_correct, has_wrong = check_answer(reply.text, q["answer"], q["choices"])
    return {(True, False): "correct", (False, True): "wrong", (True, True): "mixed"}.get(
        (has_correct, has_wrong), "missed")


def detail(q: dict, reply: Reply, mode: str, system: str) -> dict:
    """One `--details` line: the gold articles' ranks among all articles returned (None: not returned),
    the top 10, the answer and its verdict."""
    ids = [a for a, _ in reply.articles]
    return {
        "system": system, "mode": mode, "id": q.get("id", ""), "date": q["date"], "question": q["question"],
        "answerable": answerable(q), "answer_choices": q["answer"],
        "gold_ranks": {g: ids.index(g) + 1 if g in ids else None for g in q["gold_ids"]},
        "top10": [{"id": a, "title": t} for a, t in reply.articles[:10]],
        "answer": reply.text,
        "verdict": verdict(reply, q) if answerable(q) else "abstained" if reply.abstained else "answered",
        "dates": reply.dates,
    }


def quiz_date(value: str) -> date | None:
    """A question's date (`YYYY/MM/DD` or ISO), None when it has none."""
    return date.fromisoformat(value.replace("/", "-")) if value else None


def quiz_filter(quiz_date_text: str) -> Filters | None:
    """What a user sets for a weekly news quiz: from 14 days before its date to that date."""
    until = quiz_date(quiz_date_text)
    return Filters(since=until - timedelta(days=14), until=until) if until else None


def _norm(text: str) -> str:
    for quote in "\"'\u201c\u201d\u2018\u2019":
        text = text.replace(quote, "")
    return " ".join(text.lower().split())


def check_answer(text: str, answers: list[str], choices: list[str]) -> tuple[bool, bool]:
    """(contains a correct choice, contains a wrong choice), case- and quote-insensitive."""
    body = _norm(text)
    right = {_norm(a) for a in answers}
    has_correct = any(a in body for a in right)
    has_wrong = any(_norm(c) in body for c in choices if _norm(c) not in right)
    return has_correct, has_wrong


def latency(times: list[float]) -> dict:
    if not times:
        return {"ask_p50_ms": 0.0, "ask_p95_ms": 0.0}
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"ask_p50_ms": round(statistics.median(ordered), 1), "ask_p95_ms": round(p95, 1)}


def run_peer(kind: str, source: Path, ours_id: dict[str, str], questions: list[dict], folder: Path,
             details: TextIO | None = None) -> dict:
    """A LlamaIndex pipeline (`kind`: "quickstart" or "hybrid", see `rag.peer`) on the same articles and
    answerable questions (its article ids made ours, `ours_id`); retrieval only, it writes no answer.
    Its as-of figures are its undated ones: it has no date handling, so asking as on the quiz's date is
    asking the question as typed, which is the undated run."""
    from rag import peer

    system = {"quickstart": "peer", "hybrid": "peer_hybrid"}[kind]
    with PeakRSS() as rss:
        started = time.perf_counter()
        engine = (peer.QuickStart if kind == "quickstart" else peer.Hybrid)(source, folder, ours_id)
        index_s = time.perf_counter() - started

    def ask(q: dict, mode: str) -> Reply:
        return Reply(engine.ranked(q["question"], quiz_filter(q["date"]) if mode == "dated" else None))

    engine.ranked("warm up", None)
    quality, times = score(ask, questions, "undated", system, details)
    dated, _ = score(ask, questions, "dated", system, details)
    quality, dated = ({k: v for k, v in d.items() if k in RETRIEVAL} for d in (quality, dated))
    return {
        "index_s": round(index_s, 2), "articles": engine.articles, "chunks": engine.chunks,
        "chunks_per_s": round(engine.chunks / index_s, 1) if index_s else 0.0,
        "peak_rss_mb": round(rss.peak, 1), **quality, **latency(times), "dated": dated, "as_of": dict(quality),
    }


def table(result: dict) -> str:
    """A plain-text table: ours, both peers, and ours over each."""
    systems = [result["ours"], result.get("peer", {}), result.get("peer_hybrid", {})]
    keys = ["index_s", "full_quality_s", "reindex_s", "articles", "chunks", "chunks_per_s", "peak_rss_mb", *QUALITY,
            "ask_p50_ms", "ask_p95_ms"]
    corpus = result["corpus"]
    lines = [f"corpus: {corpus['articles']} articles, {corpus['questions']} questions"
             + (f" and {corpus['unanswerable']} unanswerable ones" if corpus.get("unanswerable") else ""),
             f"{'figure':<30}{'ours':>10}{'peer':>10}{'hybrid':>10}{'ours/peer':>11}{'ours/hybrid':>13}"]
    rows = [(k, [s.get(k) for s in systems]) for k in keys]
    for mode in ("dated", "as_of"):
        rows += [(f"{mode.replace('_', '-')} {k}", [s.get(mode, {}).get(k) for s in systems]) for k in QUALITY]
    for name, (ours, peer, hybrid) in rows:
        lines.append(f"{name:<30}{_cell(ours):>10}{_cell(peer):>10}{_cell(hybrid):>10}"
                     f"{_ratio(ours, peer):>11}{_ratio(ours, hybrid):>13}")
    return "\n".join(lines)


def _ratio(a: object, b: object) -> str:
    return f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
