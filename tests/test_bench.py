"""`rag bench` on a tiny benchmark written by the test, and on a slice of the shared one."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rag.bench import check_answer, run
from rag.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench" / "rtqa2022"
KEYS = {"index_s", "reindex_s", "articles", "chunks", "chunks_per_s", "peak_rss_mb", "hit@1", "hit@5", "hit@10",
        "mrr@10", "answer_correct", "answer_wrong", "ask_p50_ms", "ask_p95_ms", "dated",
        "story_groups"}

ARTICLES = [
    ("a1", "Velmora dam fails", "2022/06/01", "The Brightwater dam in Velmora failed on Tuesday, flooding 412 homes."),
    ("a2", "Orrin ferry", "2022/06/02", "The electric ferry Aurelia carries 240 passengers across Lake Orrin."),
    ("a3", "Kestrel drone", "2022/06/03", "Zentrix Robotics priced its Kestrel delivery drone at 899 euros."),
    ("a4", "Fenwick marathon", "2022/06/04", "Tomas Reyes won the Fenwick marathon in a course record time."),
    ("a5", "Quillon library", "2022/06/05", "Mayor Ilse Varga opened the Quillon library, which holds 80,000 books."),
]
QUESTIONS = [
    ("q1", "Who won the Fenwick marathon?", ["Tomas Reyes", "Ana Ruiz", "Piet Zoller", "Ilse Varga"], "Tomas Reyes",
     "a4"),
    ("q2", "How many passengers does the ferry Aurelia carry?", ["120", "240", "360", "480"], "240", "a2"),
    ("q3", "Which company makes the Kestrel drone?", ["Zentrix Robotics", "Orrin", "Velmora", "Quillon"],
     "Zentrix Robotics", "a3"),
]


def write_bench(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "articles.jsonl.gz", "wt", encoding="utf-8") as f:
        for aid, title, published, text in ARTICLES:
            f.write(json.dumps({"id": aid, "url": f"https://news.example/{aid}", "title": title, "source":
                                "news.example", "published": published, "authors": [], "text": text}) + "\n")
    with open(folder / "questions-dev.jsonl", "w", encoding="utf-8") as f:
        for qid, question, choices, answer, gold in QUESTIONS:
            f.write(json.dumps({"id": qid, "date": "2022/06/10", "question": question, "choices": choices,
                                "answer": [answer], "gold_ids": [gold], "gold_urls": []}) + "\n")
    return folder


def test_answer_check_is_case_and_quote_insensitive():
    assert check_answer("They said \u201cSquid Game\u201d returns.", ["\u201cSquid Game\u201d"],
                        ["\u201cSquid Game\u201d", "\u201cFriends\u201d"]) == (True, False)
    assert check_answer("friends and squid game", ["Squid Game"], ["Squid Game", "Friends"]) == (True, True)


def test_a_syndicated_copy_of_the_gold_article_counts_as_gold():
    from rag.bench import with_copies

    questions = [{"question": "q", "gold_ids": ["a"]}, {"question": "r", "gold_ids": ["x"]}]
    stories = {"a": "a", "b": "a", "c": "c", "d": "c"}
    assert [q["gold_ids"] for q in with_copies(questions, stories)] == [["a", "b"], ["x"]]


def test_bench_json_on_tiny_benchmark(tmp_path, capsys, monkeypatch):
    bench = write_bench(tmp_path / "bench")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(bench), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"corpus", "ours"}
    ours = result["ours"]
    assert set(ours) == KEYS
    assert set(ours["dated"]) == {"hit@1", "hit@5", "hit@10", "mrr@10", "answer_correct", "answer_wrong"}
    assert ours["articles"] == 5 and ours["chunks"] >= 5
    # ids in the file are not ours (ours come from the url): the bench maps gold ids
    assert ours["hit@1"] == 1.0 and ours["mrr@10"] == 1.0
    assert ours["answer_correct"] == 1.0 and ours["answer_wrong"] == 0.0
    assert ours["reindex_s"] < ours["index_s"]
    assert 0 < ours["ask_p50_ms"] <= ours["ask_p95_ms"]


def test_peer_is_scored_against_the_same_gold_ids(tmp_path, capsys, monkeypatch):
    pytest.importorskip("llama_index.embeddings.huggingface")
    bench = write_bench(tmp_path / "bench")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(bench), "--peer", "--json"]) == 0
    peer = json.loads(capsys.readouterr().out)["peer"]
    # the file's ids are not ours: unmapped, the peer would find every gold article and score 0
    assert peer["articles"] == 5 and peer["hit@5"] == 1.0


def test_a_missing_benchmark_is_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nowhere")]) == 2
    assert "articles.jsonl.gz: no such file" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.exists(), reason="the shared benchmark is not beside this clone")
def test_bench_slice_of_shared_benchmark(tmp_path, settings):
    result = run(SHARED, None, peer=False, limit=12, settings=settings)
    ours = result["ours"]
    assert result["corpus"]["articles"] == 12 and result["corpus"]["questions"] >= 3
    assert ours["hit@10"] >= ours["hit@5"] >= ours["hit@1"] > 0
    assert ours["chunks"] > 12 and ours["chunks_per_s"] > 0 and ours["peak_rss_mb"] > 100


def test_scale_benchmark_corpus_is_deterministic_and_new(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from scale import synthetic

    bench = write_bench(tmp_path / "bench")
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert synthetic(bench / "articles.jsonl.gz", first, factor=3) == 15
    synthetic(bench / "articles.jsonl.gz", second, factor=3)
    assert gzip.decompress(first.read_bytes()) == gzip.decompress(second.read_bytes())
    urls = [json.loads(line)["url"] for line in gzip.decompress(first.read_bytes()).decode().splitlines()]
    assert len(set(urls)) == 15
