"""LLM answers checked sentence by sentence (issue 12, items 7 and 8), against the scripted servers of
tests/llm_servers.py: invented numbers, names and facts dropped, number formats, the length cap, HTML,
streams that show only checked sentences, and the deadline of a server that trickles its reply."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from rag.api import Assistant
from rag.ground import names, numbers, unsupported
from rag.llm import check
from tests.conftest import DAM, MARIUPOL_SEED
from tests.llm_servers import ScriptedLLM
from tests.test_llm import assistant_for, check_quotes, passage_number, user_prompt

MARIUPOL_Q = "How many people were injured in the shelling of Mariupol?"
INJURED = "At least 128 persons were injured in the shelling of Mariupol, according to mayor Vadym Boychenko"
FABRICATIONS = ("At least 15000 people were killed in Mariupol", "At least 150 people were injured",
                "The mayor was arrested for fraud")


@pytest.fixture(scope="module")
def store(tmp_path_factory, settings, embedder):
    """The Mariupol seed article and the dam story."""
    from rag.store import Store

    work = tmp_path_factory.mktemp("llm-checks")
    articles = work / "articles"
    articles.mkdir()
    shutil.copy(MARIUPOL_SEED, articles / MARIUPOL_SEED.name)
    (articles / "dam.txt").write_text(DAM, encoding="utf-8")
    store = Store(work / "index")
    Assistant(store, embedder, settings).index([articles])
    yield store
    store.close()


def mariupol_reply(body: dict) -> str:
    """One supported sentence, then the three fabrications of the issue, all citing the 128-injured passage."""
    n = passage_number(user_prompt(body), "128 persons")
    return " ".join(f"{s} [{n}]." for s in (INJURED, *FABRICATIONS))


def test_fabricated_numbers_names_and_facts_are_dropped(store, embedder, settings):
    with ScriptedLLM("openai", [mariupol_reply]) as server:
        assistant = assistant_for(store, embedder, settings, "openai:m", server)
        answer = assistant.ask(MARIUPOL_Q)
        hits = list(answer.hits)
        n = passage_number(user_prompt(server.requests[0]), "128 persons")
    assert not answer.notice and not answer.abstained
    assert answer.text == f"{INJURED} [1]."
    check_quotes(assistant, answer)
    assert "128 persons" in answer.citations[0].quote
    tokens, idf = assistant.answerer.tokens, assistant.answerer.idf
    for fabrication in FABRICATIONS:  # each alone: nothing is left, the answer abstains
        assert check(f"{fabrication} [{n}].", hits, tokens, idf) == ("", []), fabrication
    assert check(f"{INJURED} [{n}].", hits, tokens, idf)[0] == f"{INJURED} [1]."
    passage = next(h.chunk.text for h in hits if "128 persons" in h.chunk.text)
    # (the passage says "persons": on this small index "people" is a rare word too)
    assert {"15000", "kill"} <= set(unsupported(FABRICATIONS[0], [passage], tokens, idf))
    assert "150" in unsupported(FABRICATIONS[1], [passage], tokens, idf)
    assert unsupported(FABRICATIONS[2], [passage], tokens, idf) == ["arrest", "fraud"]
    # a name the passage lacks, however common its other words
    assert unsupported("At least 128 persons were injured in Kherson", [passage], tokens, idf) == ["Kherson"]


def test_numbers_are_compared_by_value():
    assert numbers("1,100 people and 1100 more") == {1100}
    assert numbers("three soldiers, twenty-five tanks, two hundred shells") == {3, 25, 200}
    assert numbers("1.3 million euros, $5bn") == {1_300_000, 5_000_000_000}
    assert numbers("40% in 2022; 40 per cent") == {40, 2022}
    assert numbers("one of the towns") == {1} and numbers("one of the towns", one=False) == set()
    assert names("The mayor of Mariupol, Vadym Boychenko, said: \"The city holds.\" Bees of Brandt's farm") == [
        "Mariupol", "Vadym", "Boychenko", "Brandt"]


def test_number_formats_in_llm_sentences(store, embedder, settings):
    assistant = Assistant(store, embedder, settings)
    hits = assistant.search("How many residents did rescue teams evacuate from Velmora?")
    n = next(i for i, h in enumerate(hits, 1) if "1,300 residents" in h.chunk.text)
    tokens, idf = assistant.answerer.tokens, assistant.answerer.idf

    def kept(sentence: str) -> bool:
        return bool(check(f"{sentence} [{n}].", hits, tokens, idf)[1])

    assert kept("Rescue teams evacuated 1300 residents by boat")  # 1300 = 1,300
    assert kept("Rescue teams evacuated 1,300 residents by boat after 412 homes were flooded")
    assert not kept("Rescue teams evacuated 1,400 residents by boat")
    assert not kept("Rescue teams evacuated 1,300 residents by boat in 2019")  # a year the passage lacks
    assert not kept("Rescue teams evacuated 1,300 residents by boat, 40% of the town")
    assert not kept("Rescue teams evacuated three hundred residents by boat")
    assert not kept("Rescue teams from Ostrava evacuated 1,300 residents by boat")  # a name it lacks
    assert unsupported("Three people were hurt.", ["3 people were hurt."], tokens, idf) == []
    assert unsupported("1.3 million people fled.", ["1,300,000 people fled."], tokens, idf) == []
    assert unsupported("Prices rose 40 per cent in 2022.", ["Prices rose 40% in 2022."], tokens, idf) == []


def dam_sentences(body: dict, count: int) -> str:
    n = passage_number(user_prompt(body), "Brightwater")
    return " ".join(f"Rescue teams evacuated 1,300 residents by boat [{n}]." for _ in range(count))


def test_answers_are_capped_and_reading_stops(store, embedder, settings):
    question = "How many residents did rescue teams evacuate?"
    with ScriptedLLM("openai", [lambda body: dam_sentences(body, 40_000)]) as server:
        assistant = assistant_for(store, embedder, settings, "openai:m", server, llm_max_sentences=3)
        answer = assistant.ask(question)
        assert answer.text.count("evacuated") == 3 and not answer.notice
        # a stream stops reading at the cap: a 40,000-sentence reply at 1 ms a piece would take minutes
        server.pace = 0.001
        started = time.perf_counter()
        streamed = assistant.stream(question).result()
        took = time.perf_counter() - started
        sent = server.written[-1]
    assert streamed.text == answer.text and took < 10, took
    assert sent < 100_000  # of the reply's ~7 MB of events
    with ScriptedLLM("ollama", [lambda body: dam_sentences(body, 50)]) as server:
        assistant = assistant_for(store, embedder, settings, "ollama:m", server, llm_max_chars=120)
        for answer in (assistant.ask(question), assistant.stream(question).result()):
            sentence = "Rescue teams evacuated 1,300 residents by boat [1]."  # 51 characters: 2 fit in 120
            assert answer.text == f"{sentence} {sentence}"


def html_reply(body: dict) -> str:
    n = passage_number(user_prompt(body), "Brightwater")
    d = passage_number(user_prompt(body), "Brightwater")
    return (f"<p><b>The Brightwater dam</b> failed on Tuesday and flooded 412 homes [{d}].</p>"
            f"<script>steal(document.cookie)</script><iframe src=\"https://evil.example/\"></iframe>"
            f"<!-- hidden --> Rescue teams evacuated <i>1,300</i> residents by <a href=\"https://evil.example/b\">"
            f"boat</a> [{n}]. <img src=x onerror=alert(1)><style>body{{display:none}}</style><br/>")


def test_every_html_tag_is_stripped(store, embedder, settings):
    with ScriptedLLM("openai", [html_reply]) as server:
        assistant = assistant_for(store, embedder, settings, "openai:m", server)
        answer = assistant.ask("What happened when the Brightwater dam failed?")
        stream = assistant.stream("What happened when the Brightwater dam failed?")
        pieces = list(stream)
    for text in (answer.text, "".join(pieces)):
        assert text == ("The Brightwater dam failed on Tuesday and flooded 412 homes [1]. "
                        "Rescue teams evacuated 1,300 residents by boat [2].")
    assert stream.answer.text == answer.text


def mixed_reply(body: dict) -> str:
    """Supported sentences around fabrications, an unmarked sentence, a bad marker and markup."""
    m = passage_number(user_prompt(body), "128 persons")
    return (f"{INJURED} [{m}]. {FABRICATIONS[0]} [{m}]. The city is calm. {FABRICATIONS[1]} [{m}]. "
            f"<b>Electricity</b> was cut as a result of the shelling [{m}]. Giants did it [9]. "
            f"{FABRICATIONS[2]} [{m}].")


BAD = ("15000", "150 people", "killed", "fraud", "arrested", "calm", "Giants", "[9]", "<b>", "Electricity</b>")


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_a_stream_shows_only_checked_sentences_as_each_completes(store, embedder, settings, protocol):
    with ScriptedLLM(protocol, [mixed_reply], pace=0.03) as server:
        assistant = assistant_for(store, embedder, settings, f"{protocol}:m", server)
        stream = assistant.stream(MARIUPOL_Q)
        started = time.perf_counter()
        pieces, at = [], []
        for piece in stream:
            pieces.append(piece)
            at.append((time.perf_counter() - started, server.written[-1]))
        total = server.written[-1]
    for piece in pieces:  # nothing unsupported ever reaches a reader
        assert not any(bad in piece for bad in BAD), piece
    assert pieces == [f"{INJURED} [1].", " Electricity was cut as a result of the shelling [2]."]
    assert "".join(pieces) == stream.answer.text and not stream.answer.notice
    check_quotes(assistant, stream.answer)
    # the first sentence was sent while the model was still writing (not after the whole reply)
    assert at[0][1] < total / 2, (at, total)


def test_checked_sentences_stream_before_the_deadline_then_the_answer_ends(store, embedder, settings):
    """Past the deadline a stream that showed checked sentences ends with them, and a notice."""
    def reply(body: dict) -> str:
        m = passage_number(user_prompt(body), "128 persons")
        return f"{INJURED} [{m}]. " + " ".join([f"Electricity was cut as a result of the shelling [{m}]."] * 40)

    with ScriptedLLM("openai", [reply], pace=0.03) as server:  # ~30 pieces a second: 40 sentences take ~15 s
        assistant = assistant_for(store, embedder, settings, "openai:m", server, llm_deadline=2.5,
                                  llm_max_sentences=50)
        stream = assistant.stream(MARIUPOL_Q)
        started = time.perf_counter()  # the LLM is called when the stream is first read
        pieces = list(stream)
        took = time.perf_counter() - started
    answer = stream.answer
    assert 2.5 <= took < 4, took
    assert pieces[0] == f"{INJURED} [1]." and len(pieces) >= 2 and "".join(pieces) == answer.text
    assert not answer.abstained and answer.text.count("Electricity") == len(pieces) - 1
    assert answer.notice.startswith("The LLM (openai:m) stopped before the end of its answer (LLMDeadline: ")
    assert answer.notice.endswith("the answer ends at its last checked sentence.")


def run_within(seconds: float, call):
    """(result, seconds taken) of `call()` run in a thread; fails (instead of hanging) when it takes longer."""
    out: list = []
    started = time.perf_counter()
    worker = threading.Thread(target=lambda: out.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    took = time.perf_counter() - started
    assert out, f"no answer after {took:.1f} s"
    return out[0], took


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_a_server_dripping_bytes_is_cut_at_the_deadline(store, embedder, settings, protocol):
    """A byte every 0.5 s never trips the 1 s read timeout; the 2 s deadline ends the answer."""
    extractive = Assistant(store, embedder, settings).ask(MARIUPOL_Q)
    with ScriptedLLM(protocol, [mariupol_reply], drip=0.5) as server:
        assistant = assistant_for(store, embedder, settings, f"{protocol}:m", server, llm_timeout=1.0,
                                  llm_deadline=2.0, llm_retry_after=0)
        asked, took_ask = run_within(10, lambda: assistant.ask(MARIUPOL_Q))
        streamed, took_stream = run_within(10, lambda: assistant.stream(MARIUPOL_Q).result())
        assert len(server.requests) == 2
    print(f"drip {protocol}: ask {took_ask:.2f} s, stream {took_stream:.2f} s (deadline 2 s)")
    for answer, took in ((asked, took_ask), (streamed, took_stream)):
        assert 2.0 <= took < 5, took  # (retrieval included: up to ~1.5 s on a loaded machine)
        assert (answer.text, answer.citations) == (extractive.text, extractive.citations)
        assert answer.notice == (f"The LLM ({protocol}:m) could not answer (LLMDeadline: no complete answer "
                                 "within 2 s); this is an extractive answer.")


def test_an_llm_sentence_about_another_year_than_the_one_asked_is_dropped(tmp_path, embedder, settings):
    """The year rule is the grounding's, for every answerer: the model's sentence on the 2019 Cup, supported by its
    passage, is dropped for a question on the 2022 one; its sentence on this season's winner is kept."""
    from tests.conftest import indexed
    from tests.test_answer_kinds import CUP

    def reply(body: dict) -> str:
        n = passage_number(user_prompt(body), "Valley Owls")
        return (f"The Harbour Hawks won the Ostmark Cup in 2019 [{n}]. "
                f"The Valley Owls won the Ostmark Cup, beating the Hawks 3-1 [{n}].")

    with indexed(tmp_path, CUP, settings, embedder) as base, ScriptedLLM("openai", [reply, reply]) as server:
        assistant = assistant_for(base.store, embedder, settings, "openai:m", server)
        answer = assistant.ask("Which team won the 2022 Ostmark Cup?")
        assert answer.text == "The Valley Owls won the Ostmark Cup, beating the Hawks 3-1 [1]."
        check_quotes(assistant, answer)
        # asked with no year, the 2019 sentence is supported and kept
        assert "in 2019" in assistant.ask("Which teams have won the Ostmark Cup?").text
