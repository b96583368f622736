"""`rag bench` on a tiny benchmark written by the test, and on a slice of the shared one."""

from __future__ import annotations

import gzip
import io
import json
from datetime import date
from pathlib import Path

import pytest

from rag.bench import check_answer, run
from rag.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench" / "rtqa2022"
QUALITY = {"hit@1", "hit@5", "hit@10", "mrr@10", "answer_correct", "answer_wrong", "abstained",
           "unanswerable_abstained"}
KEYS = {"index_s", "reindex_s", "articles", "chunks", "chunks_per_s", "peak_rss_mb", *QUALITY, "ask_p50_ms",
        "ask_p95_ms", "dated", "as_of", "story_groups", "full_quality_s", "stage"}
PEER_KEYS = {"index_s", "articles", "chunks", "chunks_per_s", "peak_rss_mb", "hit@1", "hit@5", "hit@10", "mrr@10",
             "ask_p50_ms", "ask_p95_ms", "dated", "as_of"}

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
    assert set(ours["dated"]) == set(ours["as_of"]) == QUALITY
    assert result["corpus"]["unanswerable"] == 0 and ours["unanswerable_abstained"] is None
    assert ours["articles"] == 5 and ours["chunks"] >= 5
    # ids in the file are not ours (ours come from the url): the bench maps gold ids
    assert ours["hit@1"] == 1.0 and ours["mrr@10"] == 1.0
    assert ours["answer_correct"] == 1.0 and ours["answer_wrong"] == 0.0
    assert ours["reindex_s"] < ours["index_s"]
    # a two-stage index (no RAG_EMBEDDER): answerable after the fast pass, full quality after the full stage
    assert ours["stage"] in ("full", "single") and ours["index_s"] <= ours["full_quality_s"]
    assert 0 < ours["ask_p50_ms"] <= ours["ask_p95_ms"]


def test_peer_is_scored_against_the_same_gold_ids(tmp_path, capsys, monkeypatch):
    pytest.importorskip("llama_index.embeddings.huggingface")
    bench = write_bench(tmp_path / "bench")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(bench), "--peer", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for peer in (result["peer"], result["peer_hybrid"]):
        assert set(peer) == PEER_KEYS
        # the file's ids are not ours: unmapped, the peer would find every gold article and score 0
        assert peer["articles"] == 5 and peer["hit@5"] == 1.0
        # no date handling: asked as on the quiz's date, a peer searches the question as typed
        assert peer["as_of"] == {k: peer[k] for k in ("hit@1", "hit@5", "hit@10", "mrr@10")}
    assert result["peer_hybrid"]["chunks"] >= 5


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
    first, second = tmp_path / "a", tmp_path / "b"  # folders: a file per round
    assert synthetic(bench / "articles.jsonl.gz", first, factor=3) == 15
    synthetic(bench / "articles.jsonl.gz", second, factor=3)

    def lines(folder: Path) -> list[str]:
        return [line for f in sorted(folder.iterdir())
                for line in gzip.decompress(f.read_bytes()).decode().splitlines()]

    assert len(list(first.iterdir())) == 3 and lines(first) == lines(second)
    assert len({json.loads(line)["url"] for line in lines(first)}) == 15


def test_scores_count_ranks_answers_and_abstentions_over_the_right_questions():
    from rag.bench import Reply, score

    questions = [
        {"id": "q1", "question": "a?", "date": "2022/06/10", "gold_ids": ["g1"], "answer": ["Reyes"],
         "choices": ["Reyes", "Ruiz"]},
        {"id": "q2", "question": "b?", "date": "2022/06/10", "gold_ids": ["g2"], "answer": ["240"],
         "choices": ["240", "120"]},
        {"id": "u1", "question": "c?", "date": "2022/06/10", "gold_ids": [], "answer": [], "choices": [],
         "answerable": False},
        {"id": "u2", "question": "d?", "date": "2022/06/10", "gold_ids": [], "answer": [], "choices": [],
         "answerable": False},
    ]
    replies = {
        "a?": Reply([("x", "X"), ("g1", "G1")], "Reyes won, Ruiz came second."),  # rank 2, both choices: mixed
        "b?": Reply([("g2", "G2")], "Not found in the articles.", abstained=True),  # rank 1, abstained
        "c?": Reply([("x", "X")], "Not found in the articles.", abstained=True),
        "d?": Reply([("x", "X")], "Something unrelated."),
    }
    details = io.StringIO()
    quality, times = score(lambda q, mode: replies[q["question"]], questions, "as_of", "ours", details)
    # retrieval and answers over the two answerable questions only
    assert quality == {"hit@1": 0.5, "hit@5": 1.0, "hit@10": 1.0, "mrr@10": 0.75, "answer_correct": 0.5,
                       "answer_wrong": 0.5, "abstained": 0.5, "unanswerable_abstained": 0.5}
    assert len(times) == 4
    lines = [json.loads(line) for line in details.getvalue().splitlines()]
    assert [(d["id"], d["mode"], d["verdict"]) for d in lines] == [
        ("q1", "as_of", "mixed"), ("q2", "as_of", "abstained"), ("u1", "as_of", "abstained"),
        ("u2", "as_of", "answered")]
    assert lines[0]["gold_ranks"] == {"g1": 2} and lines[0]["top10"][1] == {"id": "g1", "title": "G1"}


def test_unanswerable_questions_time_words_and_details(tmp_path, capsys, monkeypatch):
    bench = write_bench(tmp_path / "bench")
    extra = tmp_path / "more.jsonl"
    extra.write_text("\n".join(json.dumps(q) for q in [
        {"id": "u1", "date": "2022/06/10", "question": "Who won the Zorvath chess open?", "answerable": False},
        {"id": "w1", "date": "2022/06/03", "question": "What failed in Velmora this week?",
         "choices": ["the Brightwater dam", "the ferry", "the library", "the drone"],
         "answer": ["the Brightwater dam"], "gold_ids": ["a1"], "gold_urls": []},
    ]) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    details = tmp_path / "details.jsonl"
    assert main(["bench", str(bench), "--questions", str(bench / "questions-dev.jsonl"), "--questions", str(extra),
                 "--details", str(details), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["corpus"]["questions"] == 4 and result["corpus"]["unanswerable"] == 1
    ours = result["ours"]
    for figures in (ours, ours["dated"], ours["as_of"]):
        assert figures["unanswerable_abstained"] == 1.0  # no article names Zorvath
        assert figures["abstained"] == 0.0 and figures["answer_correct"] == 1.0
    lines = [json.loads(line) for line in details.read_text(encoding="utf-8").splitlines()]
    assert sorted((d["mode"], d["id"]) for d in lines) == sorted(
        (mode, q) for mode in ("undated", "dated", "as_of") for q in ("q1", "q2", "q3", "u1", "w1"))
    by = {(d["mode"], d["id"]): d for d in lines}
    assert by[("undated", "u1")]["verdict"] == "abstained" and by[("undated", "u1")]["answerable"] is False
    # as-of: "this week" is read against the question's own date, not the real today
    asked = by[("as_of", "w1")]["dates"]
    assert asked["reference"] == "2022-06-03" and asked["since"] == "2022-05-28" and asked["phrase"] == "this week"
    assert by[("undated", "w1")]["dates"] is None and by[("dated", "w1")]["dates"] is None
    assert by[("as_of", "w1")]["verdict"] == "correct" and by[("as_of", "w1")]["gold_ranks"]
    assert by[("undated", "q1")]["top10"][0]["title"] == "Fenwick marathon"


def test_the_project_s_unanswerable_questions_are_asked_by_default(tmp_path):
    from rag.bench import BUNDLED, load_questions, questions_files

    files = questions_files(SHARED, None)
    assert files == [SHARED / "questions-dev.jsonl", BUNDLED / "unanswerable-rtqa2022.jsonl"]
    unanswerable = load_questions(files[1])
    assert len(unanswerable) >= 25 and all(q["answerable"] is False and not q["gold_ids"] for q in unanswerable)
    assert questions_files(tmp_path, [tmp_path / "x.jsonl"]) == [tmp_path / "x.jsonl"]
    assert questions_files(tmp_path, None) == [tmp_path / "questions-dev.jsonl"]


@pytest.mark.skipif(not SHARED.exists(), reason="the shared benchmark is not beside this clone")
def test_hybrid_peer_on_a_slice_of_the_shared_benchmark(tmp_path):
    pytest.importorskip("llama_index.retrievers.bm25")
    from rag.bench import id_map, load_questions, slice_articles
    from rag.peer import Hybrid
    from rag.types import Filters

    questions = load_questions(SHARED / "questions-dev.jsonl")
    source, kept = slice_articles(SHARED / "articles.jsonl.gz", tmp_path / "slice.jsonl.gz", 6, questions)
    _, ours_id = id_map(source)
    engine = Hybrid(source, tmp_path / "hybrid", ours_id)
    assert engine.articles == 6 and engine.chunks > 6
    asked = [q for q in questions if set(q["gold_ids"]) <= kept][:3]
    found = [ours_id[q["gold_ids"][0]] in [a for a, _ in engine.ranked(q["question"], None)[:5]] for q in asked]
    assert asked and sum(found) >= len(asked) - 1
    # a date range no article is in: BM25 still returns masked chunks (score 0), the peer drops them
    assert engine.ranked(asked[0]["question"], Filters(since=date(1990, 1, 1), until=date(1990, 1, 2))) == []
