"""Scale benchmark: ask latency and memory at the shared corpus's size and at 200k+ chunks.

Builds a synthetic corpus by recombining paragraphs of the shared benchmark's
articles into new articles (new urls, so new ids; a fixed seed, so the same
corpus every run), indexes it with the configured embedder through
`Assistant.index`, then times `Assistant.ask` (retrieval + extractive answer)
on the benchmark's questions. Prints one JSON object per size.

For the large corpus it also reports the peak RSS of each indexing phase, the
time and peak RSS of adding 100 new articles to it (one `Assistant.index` call
on a small new file; one of them is then asked about and must be cited), and
where the memory goes when asking, measured in a fresh process (`--ask-only`):
RSS after opening the index, after loading the chunk table and the BM25
indexes, after loading the question embedder and after the first vector search
(Chroma loads its HNSW index), with the sizes of the parts on disk.

Run: RAG_EMBEDDER=model2vec:all-MiniLM-L6-v2 .venv/bin/python benchmarks/scale.py ../shared/bench/rtqa2022 \
         --chunks 200000
(RAG_EMBEDDER set: a one-stage index of the static model; unset, a new index would also compute MiniLM vectors.)

It measures; it asserts nothing and tunes nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from rag.api import Assistant
from rag.bench import PeakRSS, latency, load_questions
from rag.config import Settings
from rag.progress import ProgressPrinter

# chunks of one synthetic round (446,787 at x6: its articles are longer than the shared corpus's 55,427 chunks),
# the rounds --skip-base makes
CHUNKS_PER_ROUND = 74_464
NEW_ARTICLES = 100


def synthetic(src: Path, dst: Path, factor: int, seed: int = 7) -> int:
    """Write `factor` shuffled recombinations of the corpus to the folder `dst`, a file each (one file of them
    all is refused past RAG_MAX_DECOMPRESSED_MB); returns the article count."""
    articles = [json.loads(line) for line in gzip.open(src, "rt", encoding="utf-8") if line.strip()]
    paragraphs = [p for a in articles for p in a["text"].split("\n\n") if len(p) > 80]
    rng = random.Random(seed)
    count = 0
    dst.mkdir()
    for round_ in range(factor):
        with gzip.open(dst / f"round-{round_:03d}.jsonl.gz", "wt", encoding="utf-8") as out:
            for a in articles:
                body = "\n\n".join(rng.sample(paragraphs, k=min(len(paragraphs), max(3, a["text"].count("\n\n")))))
                out.write(json.dumps({
                    "url": f"https://synthetic.example/{round_}/{a['id']}", "title": a["title"], "source":
                    a["source"], "published": a["published"], "text": body}) + "\n")
                count += 1
    return count


def new_articles(src: Path, dst: Path, count: int = NEW_ARTICLES, seed: int = 11) -> tuple[str, str]:
    """Write `count` new articles to `dst` (a .jsonl), each with one made-up fact of its own; returns a question
    about the last one's fact and that article's url."""
    articles = [json.loads(line) for line in gzip.open(src, "rt", encoding="utf-8") if line.strip()]
    paragraphs = [p for a in articles for p in a["text"].split("\n\n") if len(p) > 80]
    rng = random.Random(seed)
    with dst.open("w", encoding="utf-8") as out:
        for i in range(count):
            fact = (f"The Quorvel{i} lantern festival in Brenmoor drew {1000 + 37 * i} visitors on its opening "
                    f"day, organiser Talia Venhurst{i} said.")
            body = "\n\n".join([fact, *rng.sample(paragraphs, k=6)])
            url = f"https://added.example/{i}"
            out.write(json.dumps({"url": url, "title": f"Quorvel{i} lantern festival opens in Brenmoor",
                                  "source": "added.example", "published": "2022-12-30", "text": body}) + "\n")
    return f"How many visitors did the Quorvel{count - 1} lantern festival in Brenmoor draw?", url


class PhaseRSS(PeakRSS):
    """Peak RSS (MB) per indexing phase, as the indexer reports its phases; forwards them to a printer."""

    def __init__(self, printer: ProgressPrinter) -> None:
        self.printer, self.phase, self.peaks = printer, "opening", {}
        self._lock = threading.Lock()

    def heard(self, stage: str, done: int, total: int) -> None:
        self.phase = stage
        self.printer(stage, done, total)

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            rss = proc.memory_info().rss / 2**20
            self.peak = max(self.peak, rss)
            self.peaks[self.phase] = round(max(self.peaks.get(self.phase, 0.0), rss), 1)
            self._stop.wait(0.05)


def rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def disk_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def timed_asks(assistant: Assistant, questions: list[dict]) -> tuple[dict, float]:
    with PeakRSS() as ask_rss:
        assistant.ask(questions[0]["question"], use_llm=False, dates=False)  # warm-up
        times = []
        for q in questions:
            started = time.perf_counter()
            assistant.ask(q["question"], use_llm=False, dates=False)
            times.append((time.perf_counter() - started) * 1000)
    return latency(times), round(ask_rss.peak, 1)


def measure(corpus: Path, questions: list[dict], settings: Settings, folder: Path,
            bench_dir: Path | None = None) -> dict:
    """Index `corpus` into `folder` and time the questions; with `bench_dir`, the large corpus's details too."""
    detail = bench_dir is not None
    phases = PhaseRSS(ProgressPrinter(sys.stderr, 60.0))
    with phases as rss:
        assistant = Assistant.open(folder, settings)
        started = time.perf_counter()
        report = assistant.index([corpus], on_progress=phases.heard if detail else None,
                                 progress=sys.stderr.isatty())
        index_s = time.perf_counter() - started
    after_index = rss_mb()
    for skipped in report.skipped[:20]:  # a refused file would leave the figures of a smaller corpus
        print(f"skipped: {skipped}", file=sys.stderr)
    stats_, ask_peak = timed_asks(assistant, questions)
    stats = assistant.stats()
    row = {"articles": stats["articles"], "chunks": stats["chunks"], "index_s": round(index_s, 1),
           "peak_rss_mb_indexing": round(rss.peak, 1), "peak_rss_mb_asking": ask_peak, **stats_}
    if detail:
        row |= {"rss_mb_after_indexing": after_index, "peak_rss_mb_by_phase": phases.peaks,
                "add_100": add_articles(assistant, bench_dir / "articles.jsonl.gz", folder.parent)}
    assistant.close()
    if detail:
        row["fresh_process"] = fresh_ask(folder, bench_dir)
    return row


def add_articles(assistant: Assistant, source: Path, tmp: Path) -> dict:
    """Index 100 new articles (paragraphs of `source` and a fact each) into the large index in one call; ask
    about one of them."""
    small = tmp / "added.jsonl"
    question, url = new_articles(source, small)
    before, rss_before = assistant.stats()["articles"], rss_mb()
    with PeakRSS() as rss:
        started = time.perf_counter()
        assistant.index([small])
        seconds = time.perf_counter() - started
    started = time.perf_counter()
    answer = assistant.ask(question, use_llm=False, dates=False)
    ask_ms = (time.perf_counter() - started) * 1000
    return {"articles_added": assistant.stats()["articles"] - before, "index_s": round(seconds, 1),
            "peak_rss_mb": round(rss.peak, 1), "rss_mb_before": rss_before,
            "ask_ms": round(ask_ms, 1), "new_article_cited": any(c.url == url for c in answer.citations)}


def fresh_ask(folder: Path, bench_dir: Path) -> dict:
    """The asking memory of a fresh process on `folder` (see --ask-only)."""
    out = subprocess.run([sys.executable, __file__, str(bench_dir), "--ask-only", str(folder)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout)


def ask_only(folder: Path, questions: list[dict], settings: Settings) -> dict:
    """RSS step by step while a fresh process opens the index and answers its first questions."""
    from rag.lexical import ARTICLES, PASSAGES

    steps = {"python_and_imports": rss_mb()}
    assistant = Assistant.open(folder, settings)
    steps["opened"] = rss_mb()
    started = time.perf_counter()
    retriever = assistant.retriever
    load_s = round(time.perf_counter() - started, 1)
    steps["chunk_table_and_bm25_loaded"] = rss_mb()
    assistant.embedder.embed(["warm up"])
    steps["question_embedder_loaded"] = rss_mb()
    assistant.search(questions[0]["question"])
    steps["first_search_chroma_hnsw_loaded"] = rss_mb()
    timings, peak = timed_asks(assistant, questions)
    steps["after_asking"] = rss_mb()
    searches = []
    for q in questions:
        started = time.perf_counter()
        assistant.search(q["question"])
        searches.append((time.perf_counter() - started) * 1000)
    del retriever
    chunks, dim = assistant.stats()["chunks"], assistant.embedder.dim
    row = {"rss_mb": steps, "peak_rss_mb_asking": peak, **timings, "retriever_load_s": load_s,
           **{k.replace("ask", "search"): v for k, v in latency(searches).items()},
           "profile_ms_per_question": profile(assistant, questions),
           "vectors_fp32_mb": round(chunks * dim * 4 / 2**20, 1), "dim": dim,
           "disk_mb": {"chroma": disk_mb(folder / "chroma"), "bm25_passages": disk_mb(folder / PASSAGES),
                       "bm25_articles": disk_mb(folder / ARTICLES),
                       "catalogue": round(sum(p.stat().st_size for p in folder.glob("articles.sqlite*")) / 2**20, 1)}}
    assistant.close()
    return row


def profile(assistant: Assistant, questions: list[dict], top: int = 12) -> dict[str, float]:
    """Where an ask's time goes: the functions of most own time (cProfile, which slows Python code more than
    numpy's and Chroma's), in ms per question."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for q in questions:
        assistant.ask(q["question"], use_llm=False, dates=False)
    profiler.disable()
    rows = sorted(pstats.Stats(profiler).stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return {f"{Path(f).name}:{line}:{name}": round(tt * 1000 / len(questions), 2) for (f, line, name), (_, _, tt, _, _)
            in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("--chunks", type=int, default=200_000, help="at least this many chunks in the large corpus")
    parser.add_argument("--skip-base", action="store_true", help="only the large corpus (rounds of about "
                        f"{CHUNKS_PER_ROUND:,} chunks each)")
    parser.add_argument("--ask-only", type=Path, metavar="INDEX", help="(internal) the fresh-process ask memory")
    args = parser.parse_args()
    settings = Settings()
    questions = load_questions(args.bench_dir / "questions-dev.jsonl")
    if args.ask_only:
        print(json.dumps(ask_only(args.ask_only, questions, settings)))
        return 0
    source = args.bench_dir / "articles.jsonl.gz"
    with tempfile.TemporaryDirectory(prefix="rag-scale-") as tmp:
        per_round = CHUNKS_PER_ROUND
        if not args.skip_base:
            base = measure(source, questions, settings, Path(tmp) / "base")
            print(json.dumps({"size": "shared corpus", **base}), flush=True)
            per_round = base["chunks"]
        factor = -(-args.chunks // max(per_round, 1))  # ceil
        large = Path(tmp) / "synthetic"
        synthetic(source, large, factor)
        print(json.dumps({"size": f"synthetic x{factor}", **measure(large, questions, settings, Path(tmp) / "big",
                                                                     args.bench_dir)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
