"""Bench: measure the real pipeline on a news QA benchmark, optionally beside a peer.

`rag bench BENCH_DIR` indexes `BENCH_DIR/articles.jsonl.gz` into a fresh
temporary index with `Assistant.index`, re-indexes it unchanged, then asks every
question through `Assistant.ask` and scores article ranks (hit@k, MRR@10) and
answer text (contains the correct choice / a wrong one), undated and with the
date filter of a weekly quiz (from 14 days before the question's date to that date). `--peer`
runs the LlamaIndex quick-start (default SentenceSplitter, the same embedder in
fp32, Chroma, articles ranked from its top-50 chunks) on the same data.
For both, a gold article counts as found when it or a syndicated copy of it is
(the copies our index grouped: the same text under another outlet's name).

It reads the benchmark where it lies and copies nothing into the project;
it does not tune anything.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import psutil
from tqdm import tqdm

from rag.config import Settings
from rag.types import Filters

QUALITY = ("hit@1", "hit@5", "hit@10", "mrr@10", "answer_correct", "answer_wrong")
Ranker = Callable[[str, Filters | None], tuple[list[str], str]]  # question -> (article ids, answer text)


def main(args: argparse.Namespace, settings: Settings) -> int:
    needed = [args.bench_dir / "articles.jsonl.gz", args.questions or args.bench_dir / "questions-dev.jsonl"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        print(f"rag: {missing[0]}: no such file (BENCH_DIR holds articles.jsonl.gz and questions-dev.jsonl)",
              file=sys.stderr)
        return 2
    result = run(args.bench_dir, args.questions, args.peer, args.limit, settings)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


def run(bench_dir: Path, questions_file: Path | None, peer: bool, limit: int | None, settings: Settings) -> dict:
    """Index, re-index and ask; returns the `--json` document."""
    articles_file = bench_dir / "articles.jsonl.gz"
    questions = load_questions(questions_file or bench_dir / "questions-dev.jsonl")
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        source = articles_file
        if limit:
            source, kept = slice_articles(articles_file, Path(tmp) / "articles.jsonl.gz", limit, questions)
            questions = [q for q in questions if set(q["gold_ids"]) <= kept]
        n_articles, ours_id = id_map(source)
        questions = [{**q, "gold_ids": [ours_id.get(g, g) for g in q["gold_ids"]]} for q in questions]
        corpus = {"articles_file": str(articles_file), "articles": n_articles, "questions": len(questions)}
        ours, stories = run_ours(source, questions, Path(tmp) / "ours", settings)
        result = {"corpus": corpus, "ours": ours}
        if peer:
            result["peer"] = run_peer(source, ours_id, with_copies(questions, stories), Path(tmp) / "peer")
    return result


def load_questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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


def run_ours(source: Path, questions: list[dict], index_dir: Path, settings: Settings) -> tuple[dict, dict]:
    """Our figures, and the story groups the index found (article id -> story id)."""
    from rag.api import Assistant

    with PeakRSS() as rss:
        assistant = Assistant.open(index_dir, settings)
        started = time.perf_counter()
        report = assistant.index([source], progress=True)
        index_s = time.perf_counter() - started
    started = time.perf_counter()
    assistant.index([source])
    reindex_s = time.perf_counter() - started
    stats = assistant.stats()
    stories = assistant.store.stories()
    questions = with_copies(questions, stories)

    def ask(question: str, filters: Filters | None) -> tuple[list[str], str]:
        # the extractive answer, whatever RAG_LLM says; dates=False: the undated run measures ranking alone
        # ("this week" in a quiz question filters nothing)
        answer = assistant.ask(question, filters=filters, k=max(20, settings.top_k), use_llm=False, dates=False)
        return list(dict.fromkeys(h.article.id for h in answer.hits)), answer.text

    ask(questions[0]["question"] if questions else "warm up", None)  # warm-up: caches, lazy imports
    quality, times = score(ask, questions, "ours")
    dated, _ = score(ask, questions, "ours, dated", dated=True)
    assistant.close()
    return {
        "index_s": round(index_s, 2), "reindex_s": round(reindex_s, 3),
        "articles": stats["articles"], "chunks": stats["chunks"], "story_groups": stats["story_groups"],
        "chunks_per_s": round(report.chunks_embedded / index_s, 1) if index_s else 0.0,
        "peak_rss_mb": round(rss.peak, 1), **quality, **latency(times), "dated": dated,
    }, stories


def score(ask: Ranker, questions: list[dict], label: str, dated: bool = False) -> tuple[dict, list[float]]:
    """Article-level ranks and answer checks over all questions, plus each ask's time."""
    ranks: list[int | None] = []
    correct = wrong = 0
    times: list[float] = []
    for q in tqdm(questions, desc=label, unit="q", file=sys.stderr, leave=False):
        started = time.perf_counter()
        ids, text = ask(q["question"], quiz_filter(q["date"]) if dated else None)
        times.append((time.perf_counter() - started) * 1000)
        gold = set(q["gold_ids"])
        ranks.append(next((i for i, a in enumerate(ids[:10], 1) if a in gold), None))
        has_correct, has_wrong = check_answer(text, q["answer"], q["choices"])
        correct += has_correct
        wrong += has_wrong
    n = max(len(questions), 1)
    quality = {f"hit@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 3) for k in (1, 5, 10)}
    quality["mrr@10"] = round(sum(1 / r for r in ranks if r) / n, 3)
    quality["answer_correct"] = round(correct / n, 3)
    quality["answer_wrong"] = round(wrong / n, 3)
    return quality, times


def quiz_filter(quiz_date: str) -> Filters:
    """What a user sets for a weekly news quiz: from 14 days before its date to that date."""
    until = date.fromisoformat(quiz_date.replace("/", "-"))
    return Filters(since=until - timedelta(days=14), until=until)


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


def run_peer(source: Path, ours_id: dict[str, str], questions: list[dict], folder: Path) -> dict:
    """The LlamaIndex quick-start on the same articles and questions (its article ids made ours, `ours_id`)."""
    from rag import peer

    with PeakRSS() as rss:
        started = time.perf_counter()
        engine = peer.QuickStart(source, folder, ours_id)
        index_s = time.perf_counter() - started
    engine.ranked("warm up", None)
    quality, times = score(engine.ranked, questions, "peer")
    dated, _ = score(engine.ranked, questions, "peer, dated", dated=True)
    for key in ("answer_correct", "answer_wrong"):
        quality.pop(key)
        dated.pop(key)
    return {
        "index_s": round(index_s, 2), "articles": engine.articles, "chunks": engine.chunks,
        "chunks_per_s": round(engine.chunks / index_s, 1) if index_s else 0.0,
        "peak_rss_mb": round(rss.peak, 1), **quality, **latency(times), "dated": dated,
    }


def table(result: dict) -> str:
    """A plain-text table: ours, peer and their ratio."""
    ours, peer = result["ours"], result.get("peer", {})
    keys = ["index_s", "reindex_s", "articles", "chunks", "chunks_per_s", "peak_rss_mb", *QUALITY,
            "ask_p50_ms", "ask_p95_ms"]
    lines = [f"corpus: {result['corpus']['articles']} articles, {result['corpus']['questions']} questions",
             f"{'figure':<22}{'ours':>12}{'peer':>12}{'ours/peer':>12}"]
    rows = [(k, ours.get(k), peer.get(k)) for k in keys]
    rows += [(f"dated {k}", ours["dated"].get(k), peer.get("dated", {}).get(k)) for k in QUALITY]
    for name, a, b in rows:
        ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
        lines.append(f"{name:<22}{_cell(a):>12}{_cell(b):>12}{ratio:>12}")
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
