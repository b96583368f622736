"""Scale benchmark: ask latency and memory at the shared corpus's size and at 200k+ chunks.

Builds a synthetic corpus by recombining paragraphs of the shared benchmark's
articles into new articles (new urls, so new ids; a fixed seed, so the same
corpus every run), indexes it with the configured embedder through
`Assistant.index`, then times `Assistant.ask` (retrieval + extractive answer)
on the benchmark's questions. Prints one JSON object per size.

Run: RAG_EMBEDDER=model2vec:all-MiniLM-L6-v2 .venv/bin/python benchmarks/scale.py ../shared/bench/rtqa2022 \
         --chunks 200000

It measures; it asserts nothing and tunes nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from rag.api import Assistant
from rag.bench import PeakRSS, latency, load_questions
from rag.config import Settings


def synthetic(src: Path, dst: Path, factor: int, seed: int = 7) -> int:
    """Write `factor` shuffled recombinations of the corpus to `dst`; returns the article count."""
    articles = [json.loads(line) for line in gzip.open(src, "rt", encoding="utf-8") if line.strip()]
    paragraphs = [p for a in articles for p in a["text"].split("\n\n") if len(p) > 80]
    rng = random.Random(seed)
    count = 0
    with gzip.open(dst, "wt", encoding="utf-8") as out:
        for round_ in range(factor):
            for a in articles:
                body = "\n\n".join(rng.sample(paragraphs, k=min(len(paragraphs), max(3, a["text"].count("\n\n")))))
                out.write(json.dumps({
                    "url": f"https://synthetic.example/{round_}/{a['id']}", "title": a["title"], "source":
                    a["source"], "published": a["published"], "text": body}) + "\n")
                count += 1
    return count


def measure(corpus: Path, questions: list[dict], settings: Settings, folder: Path) -> dict:
    with PeakRSS() as rss:
        assistant = Assistant.open(folder, settings)
        started = time.perf_counter()
        assistant.index([corpus], progress=sys.stderr.isatty())
        index_s = time.perf_counter() - started
    with PeakRSS() as ask_rss:
        assistant.ask(questions[0]["question"], use_llm=False, dates=False)  # warm-up
        times = []
        for q in questions:
            started = time.perf_counter()
            assistant.ask(q["question"], use_llm=False, dates=False)
            times.append((time.perf_counter() - started) * 1000)
    stats = assistant.stats()
    assistant.close()
    return {"articles": stats["articles"], "chunks": stats["chunks"], "index_s": round(index_s, 1),
            "peak_rss_mb_indexing": round(rss.peak, 1), "peak_rss_mb_asking": round(ask_rss.peak, 1),
            **latency(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("--chunks", type=int, default=200_000, help="at least this many chunks in the large corpus")
    args = parser.parse_args()
    settings = Settings()
    questions = load_questions(args.bench_dir / "questions-dev.jsonl")
    source = args.bench_dir / "articles.jsonl.gz"
    with tempfile.TemporaryDirectory(prefix="rag-scale-") as tmp:
        base = measure(source, questions, settings, Path(tmp) / "base")
        print(json.dumps({"size": "shared corpus", **base}), flush=True)
        factor = -(-args.chunks // max(base["chunks"], 1))  # ceil
        large = Path(tmp) / "synthetic.jsonl.gz"
        synthetic(source, large, factor)
        print(json.dumps({"size": f"synthetic x{factor}", **measure(large, questions, settings, Path(tmp) / "big")}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
