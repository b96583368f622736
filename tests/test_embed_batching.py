"""Concurrent query encodes share model calls (rag.embed.Coalescer), with the real packaged MiniLM.

Threads that call `embed` while the model is busy are encoded together in its next call: the same vectors as
each encoded alone (float tolerance), in fewer model calls than there were threads.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

QUESTIONS = [
    "How many residents were forced from their homes in Dovrin?", "How many people were injured in Harkavy?",
    "What happened to the Dovrin bridge?", "Who is the mayor of Dovrin?", "When did the Brightwater dam fail?",
    "How many passengers does the ferry Aurelia carry?", "What does the Kestrel drone cost?", "flood",
    "Who won the Fenwick marathon?", "Which comet was discovered on Mount Pellar in January last year?",
    "Mariupol", "How many books does the Quillon library hold?",
]


def at_once(embed, questions: list[str]) -> list[np.ndarray]:
    """Each question embedded by its own thread, all released together."""
    out: list[np.ndarray | None] = [None] * len(questions)
    errors: list[BaseException] = []
    start = threading.Barrier(len(questions))

    def one(i: int) -> None:
        start.wait()
        try:
            out[i] = embed([questions[i]])[0]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and all(v is not None for v in out)
    return out  # type: ignore[return-value]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.fixture
def model_calls(embedder):
    """How many times the real SentenceTransformer encodes, counted around it."""
    model = embedder.model
    calls: list[int] = []
    real = model.encode

    def counted(texts, *args, **kwargs):
        calls.append(len(texts))
        return real(texts, *args, **kwargs)

    model.encode = counted
    yield calls
    del model.encode


def test_concurrent_questions_get_their_own_vectors_in_fewer_model_calls(embedder, model_calls):
    alone = [embedder.embed([q])[0] for q in QUESTIONS]
    model_calls.clear()
    together = at_once(embedder.embed, QUESTIONS)
    # each its own vector: bf16 autocast (on AMX) rounds a padded batch slightly differently from a lone text
    # (cosine 0.99999 here, components within 1e-3), while any two of these questions are far apart
    cosines = np.stack(together) @ np.stack(alone).T
    assert np.diag(cosines).min() > 0.9999, np.diag(cosines)
    assert (cosines - np.eye(len(QUESTIONS)) * 2).max() < 0.95  # no question got another's vector
    assert sum(model_calls) == len(QUESTIONS)  # every question encoded once
    assert len(model_calls) < len(QUESTIONS), model_calls  # before the coalescer: one call per question


def test_large_and_progress_calls_are_not_merged(embedder):
    """`rag index`'s batches (more than `limit` texts, or a progress bar) run alone, in their turn."""
    from rag.embed import Coalescer

    seen: list[tuple[int, bool]] = []
    gate = threading.Event()

    def encode(texts: list[str], progress: bool) -> np.ndarray:
        gate.wait(10)  # the first call holds the model while the others queue up
        seen.append((len(texts), progress))
        return embedder.embed(texts)

    coalesce = Coalescer(encode, limit=4)
    big = QUESTIONS[:6]
    results: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda: results.update(first=coalesce(["flood"])))]
    threads[0].start()
    wait_until(lambda: coalesce.busy)  # the first call is in the model
    calls = (("big", big, False), ("bar", ["a bar"], True), ("q1", ["q1"], False), ("q2", ["q2"], False))
    for queued, (name, texts, progress) in enumerate(calls, 1):
        threads.append(threading.Thread(target=lambda n=name, t=texts, p=progress: results.update({n: coalesce(t, p)})))
        threads[-1].start()
        wait_until(lambda q=queued: coalesce.queued == q)  # queued in this order
    gate.set()
    for t in threads:
        t.join(30)
    assert seen == [(1, False), (6, False), (1, True), (2, False)]
    assert [len(results[n]) for n in ("first", "big", "bar", "q1", "q2")] == [1, 6, 1, 1, 1]
    assert np.allclose(results["big"], embedder.embed(big), atol=1e-5)


def test_a_failing_text_fails_its_own_call_only(embedder):
    """A merged call that raises is done again call by call: the others still get their vectors."""
    from rag.embed import Coalescer

    gate = threading.Event()

    def encode(texts: list[str], progress: bool) -> np.ndarray:
        gate.wait(10)
        if "bad" in texts:
            raise ValueError("a bad text")
        return embedder.embed(texts)

    coalesce = Coalescer(encode, limit=64)
    results: dict[str, object] = {}

    def call(name: str, text: str) -> None:
        try:
            results[name] = coalesce([text])
        except ValueError as exc:
            results[name] = exc

    first = threading.Thread(target=call, args=("first", "flood"))
    first.start()
    wait_until(lambda: coalesce.busy)
    others = [threading.Thread(target=call, args=(n, t)) for n, t in (("bad", "bad"), ("good", "Dovrin"))]
    for queued, t in enumerate(others, 1):
        t.start()
        wait_until(lambda q=queued: coalesce.queued == q)
    gate.set()
    for t in [first, *others]:
        t.join(30)
    assert isinstance(results["bad"], ValueError)
    assert np.allclose(results["good"], embedder.embed(["Dovrin"]), atol=1e-5)
    assert coalesce.model_calls == 4  # first; bad+good merged (raised); then bad alone, good alone


def test_int8_onnx_questions_take_turns_unmerged(settings):
    """The default full stage (onnx int8) quantizes activations with one scale per run: merged, a question's
    vector would depend on the others asked with it, so its concurrent calls take turns and get exactly the
    vectors they get alone."""
    pytest.importorskip("onnxruntime")
    from rag.embed import make_embedder

    onnx = make_embedder("onnx:all-MiniLM-L6-v2", "auto", 64, settings.cache_dir)  # the export is cached
    alone = np.stack([onnx.embed([q])[0] for q in QUESTIONS])
    assert np.array_equal(np.stack(at_once(onnx.embed, QUESTIONS)), alone)
