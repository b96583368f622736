"""Team mode across hosts, against real servers: PostgreSQL (tests/pg_server.py) and `chroma run`
(tests/chroma_server.py).

A "host" here is a process with a working folder of its own (its `--index` folder: the lexical cache) and no
file shared with the other hosts; they share only the servers (RAG_DATABASE_URL, RAG_CHROMA_HOST/PORT and one
collection). Covered: two indexers at once; `rag index` killed with SIGKILL at several points, resumed on
another host; readers on other hosts (an `Assistant` here, `rag serve`) while one writes; two Slack bot
replicas behind one URL; PostgreSQL restarted under a running `rag serve` and `rag web`; `rag bench` ranking
as in local mode. Every process a test starts runs in its own process group and is stopped at the end.

The static model2vec embedder (distilled once, cached) keeps the runs short. It does not test the catalogue's
or the lock's own contracts (tests/test_catalogue.py) nor the basic A-indexes/B-answers flow (tests/test_team.py).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rag.catalogue_pg import schema_name
from tests.chroma_server import chroma_server, free_port  # noqa: F401 - fixture
from tests.conftest import CORPUS, DAM, DOVRIN, ROOT, needs_corpus, write_collection, write_jsonl

STATIC = "model2vec:all-MiniLM-L6-v2"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


# ---------------------------------------------------------------- the team: servers, hosts, processes


@dataclass
class Team:
    """One collection on the shared servers; `env` for a host's process, `settings` for one in this process."""

    url: str
    chroma_port: int
    collection: str
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "SLACK_"))}
        env.update({"PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "RAG_EMBEDDER": STATIC,
                    "RAG_DATABASE_URL": self.url, "RAG_CHROMA_HOST": "127.0.0.1",
                    "RAG_CHROMA_PORT": str(self.chroma_port), "RAG_CHROMA_COLLECTION": self.collection, **extra})
        return env

    def settings(self, index_dir: Path, **changes):
        from rag.config import Settings

        return Settings(_env_file=None, index_dir=index_dir, embedder=STATIC, database_url=self.url,
                        chroma_host="127.0.0.1", chroma_port=self.chroma_port, chroma_collection=self.collection,
                        **changes)

    def host(self, name: str) -> Path:
        """A host's working folder (its index folder is `index/` in it)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def other(self, name: str) -> Team:
        """Another collection on the same servers (a clean reference build)."""
        return Team(self.url, self.chroma_port, f"{self.collection}-{name}", self.root / name)


@pytest.fixture
def team(tmp_path, pg_url, chroma_server) -> Team:  # noqa: F811 - chroma_server is the fixture
    return Team(pg_url, chroma_server.port, f"hosts-{uuid.uuid4().hex[:8]}", tmp_path)


class Procs:
    """Processes a test starts, each in a process group of its own; `stop_all` ends every one still running."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], cwd: Path, env: dict[str, str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(args, cwd=cwd, env=env, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for proc in self.started:
            self.stop(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[Procs]:
    started = Procs()
    try:
        yield started
    finally:
        started.stop_all()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", *args]


def run_cli(team: Team, host: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """One `rag` command on a host (its index folder), to the end."""
    return subprocess.run(cli(*args, "--index", str(host / "index")), cwd=host, env=team.env(**env),
                          capture_output=True, text=True, timeout=timeout)


def write_slice(path: Path, n: int, skip: int = 0) -> list[dict]:
    """Articles `skip`..`skip + n` of the shared corpus as a .jsonl.gz of their own (never in the project)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = list(itertools.islice(f, skip, skip + n))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return [json.loads(line) for line in lines]


def wait_http(proc: subprocess.Popen, url: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the server exited: {proc.stderr.read().decode()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in time")


# ---------------------------------------------------------------- what a build left on the servers


def catalogue_rows(team: Team) -> dict:
    """The collection's catalogue: articles (id, content hash), chunk rows, the dirty flag (empty before its
    schema exists)."""
    import psycopg

    schema = schema_name(team.collection)
    with psycopg.connect(team.url, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = "
                            "'chunks'", (schema,)).fetchone():
            return {"articles": [], "chunks": [], "dirty": False}
        return {
            "articles": conn.execute(f"SELECT id, content_hash FROM {schema}.articles ORDER BY id").fetchall(),
            "chunks": conn.execute(f'SELECT id, article_id, seq, start, "end" FROM {schema}.chunks '
                                   "ORDER BY id").fetchall(),
            "dirty": bool(conn.execute(f"SELECT 1 FROM {schema}.meta WHERE key = 'dirty'").fetchone()),
        }


def article_count(team: Team) -> int:
    import psycopg

    try:
        with psycopg.connect(team.url, connect_timeout=5) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {schema_name(team.collection)}.articles").fetchone()[0]
    except psycopg.Error:  # no schema yet
        return 0


def chroma_vectors(team: Team) -> tuple[dict[str, np.ndarray], int]:
    """{chunk id: vector} of the collection on the Chroma server, and its count."""
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=team.chroma_port,
                                 settings=chromadb.Settings(anonymized_telemetry=False))
    try:
        collection = client.get_collection(team.collection)
    except Exception:  # noqa: BLE001 - not created yet
        return {}, 0
    got = collection.get(include=["embeddings"], limit=1_000_000)
    return {cid: np.asarray(v, dtype=np.float32) for cid, v in zip(got["ids"], got["embeddings"])}, collection.count()


def snapshot(team: Team) -> dict:
    rows = catalogue_rows(team)
    vectors, count = chroma_vectors(team)
    return {**rows, "vectors": vectors, "count": count}


def assert_clean(built: dict, clean: dict) -> None:
    """`built` is what a clean build gives: the same articles and chunks, one vector per chunk row and no
    other, equal vectors, no article twice, no run left unfinished."""
    assert not built["dirty"]
    assert built["articles"] == clean["articles"]
    assert len({h for _, h in built["articles"]}) == len(built["articles"])  # no text stored twice
    assert built["chunks"] == clean["chunks"]
    assert built["count"] == len(built["vectors"]) == len(built["chunks"])  # Chroma == catalogue, no duplicates
    assert set(built["vectors"]) == {c[0] for c in built["chunks"]}
    for cid, vector in clean["vectors"].items():
        assert np.allclose(built["vectors"][cid], vector, atol=1e-5), cid


def clean_build(team: Team, data: Path) -> subprocess.Popen:
    """A clean reference build of `data` in another collection, on its own host."""
    reference = team.other("clean")
    host = reference.host("host")
    return subprocess.Popen(cli("index", str(data), "--index", str(host / "index")), cwd=host, env=reference.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        Procs.stop(proc, signal.SIGKILL)
        raise
    assert proc.returncode == 0, err.decode()[-3000:]


# ---------------------------------------------------------------- two indexers


@pytest.mark.slow
@needs_corpus
def test_two_indexers_on_two_hosts_one_writes_and_the_result_equals_a_clean_build(team, procs):
    hosts = [team.host("a"), team.host("b")]
    for host in hosts:  # each host its own copy of the articles: the same ids under two paths
        write_slice(host / "data" / "slice.jsonl.gz", 60)
    reference = clean_build(team, hosts[0] / "data" / "slice.jsonl.gz")
    procs.started.append(reference)
    writers = [procs.start(cli("index", str(h / "data" / "slice.jsonl.gz"), "--index", str(h / "index")), h,
                           team.env(RAG_INDEX_BATCH_CHUNKS="64")) for h in hosts]
    outcomes = []
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        outcomes.append((writer.returncode, err.decode()))
    assert any(code == 0 for code, _ in outcomes), outcomes
    for (code, err), host in zip(outcomes, hosts):
        assert "Traceback" not in err, err[-3000:]
        if code != 0:  # refused after waiting: a one-line reason naming the writer, without the password
            assert code == 2 and "only one writer at a time" in err and "another process (pid" in err, err
            assert "s3cret" not in err
            again = run_cli(team, host, "index", str(host / "data" / "slice.jsonl.gz"))
            assert again.returncode == 0, again.stderr
    finish(reference)
    built = snapshot(team)
    assert_clean(built, snapshot(team.other("clean")))
    assert len(built["articles"]) == 60
    for host in hosts:  # each host's lexical cache serves the whole collection
        stats = run_cli(team, host, "stats", "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["articles"] == 60
    print(f"\ntwo indexers: exit codes {[c for c, _ in outcomes]}")


# ---------------------------------------------------------------- SIGKILL


class Watched:
    """A `rag index` whose progress lines are read as they come (RAG_PROGRESS_EVERY is small)."""

    def __init__(self, procs: Procs, team: Team, host: Path, data: Path) -> None:
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.proc = procs.start(cli("index", str(data), "--index", str(host / "index")), host,
                                team.env(RAG_INDEX_BATCH_CHUNKS="64", RAG_PROGRESS_EVERY="0.05"),
                                stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def embedded(self) -> tuple[int, int]:
        """(done, total) of the last embedding line."""
        for line in reversed(self.lines):
            m = re.search(r"embedding: ([\d,]+) of ([\d,]+)", line)
            if m:
                return int(m[1].replace(",", "")), int(m[2].replace(",", ""))
        return 0, 0

    def phase(self, name: str) -> bool:
        return any(line.startswith(name) or f"· {name}" in line for line in self.lines)

    def kill_when(self, condition: Callable[[Watched], bool], timeout: float = 180) -> str:
        """SIGKILL as soon as `condition` holds: "killed", or "finished" when the run ended first."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if condition(self):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.reader.join(5)
                return "killed" if self.proc.returncode == -signal.SIGKILL else "finished"
            time.sleep(0.01)
        self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        self.reader.join(5)
        assert self.proc.returncode == 0, "\n".join(self.lines[-30:])
        return "finished"


@pytest.mark.slow
@needs_corpus
def test_sigkill_at_several_points_then_another_host_resumes_converges_to_a_clean_build(team, procs):
    hosts = [team.host("a"), team.host("b")]
    for host in hosts:
        write_slice(host / "data" / "slice.jsonl.gz", 100)
    reference = clean_build(team, hosts[0] / "data" / "slice.jsonl.gz")
    procs.started.append(reference)

    def third_embedded(w: Watched) -> bool:
        done, total = w.embedded()
        return total > 0 and done >= total // 3

    points = [
        ("0.5 s", lambda w: time.monotonic() - w.started > 0.5),
        ("2 s", lambda w: time.monotonic() - w.started > 2.0),
        ("a third embedded", third_embedded),
        ("60 articles committed", lambda w: article_count(team) >= 60),
        ("lexical index", lambda w: w.phase("lexical index")),
    ]
    outcomes = {}
    for i, (name, condition) in enumerate(points):  # the hosts take turns: each resumes what the other left
        host = hosts[i % 2]
        outcomes[name] = Watched(procs, team, host, host / "data" / "slice.jsonl.gz").kill_when(condition)
    assert list(outcomes.values()).count("killed") >= 4, outcomes
    last = Watched(procs, team, hosts[1], hosts[1] / "data" / "slice.jsonl.gz")
    assert last.kill_when(lambda w: False) == "finished"
    finish(reference)
    built = snapshot(team)
    assert_clean(built, snapshot(team.other("clean")))
    assert len(built["articles"]) == 100
    # the host that was killed last but did not finish answers the whole collection from its own cache
    title = json.loads(gzip.open(hosts[0] / "data" / "slice.jsonl.gz", "rt").readline())["title"]
    found = run_cli(team, hosts[0], "ask", title, "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["citations"], found.stdout[:2000]
    stats = json.loads(run_cli(team, hosts[0], "stats", "--json").stdout)
    assert (stats["articles"], stats["chunks"]) == (100, len(built["chunks"]))
    print(f"\nkill points: {outcomes}")


# ---------------------------------------------------------------- readers during a write

QUESTIONS = [  # (question, what the answer says), from the fixture collection
    ("How many homes were flooded when the Brightwater dam failed?", "412 homes"),
    ("How many passengers does the ferry Aurelia carry?", "240 passengers"),
    ("What does the Kestrel drone cost?", "899 euros"),
    ("Who won the Fenwick marathon?", "Tomas Reyes"),
]


class Askers:
    """Threads asking until told to stop; counts answers and errors (a wrong answer is one)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.asked: dict[str, int] = {}
        self.errors: dict[str, list[str]] = {}
        self.threads: list[threading.Thread] = []

    def start(self, kind: str, ask: Callable[[str], str], n: int = 1) -> None:
        self.asked[kind], self.errors[kind] = 0, []
        for i in range(n):
            thread = threading.Thread(target=self._loop, args=(kind, ask, i), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, kind: str, ask: Callable[[str], str], offset: int) -> None:
        for question, expected in itertools.islice(itertools.cycle(QUESTIONS), offset, None):
            if self.stop.is_set():
                return
            try:
                text = ask(question)
                error = "" if expected in text else f"wrong answer to {question!r}: {text[:300]}"
            except Exception as exc:  # noqa: BLE001 - counted and asserted by the test
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.asked[kind] += 1
                if error:
                    self.errors[kind].append(error)
            time.sleep(0.02)  # leave the writer some of the two CPUs

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


@needs_corpus
def test_readers_on_other_hosts_get_no_error_while_one_host_writes(team, procs):
    import httpx

    from rag import Assistant

    writer, reader, api_host = team.host("writer"), team.host("reader"), team.host("api")
    first = run_cli(team, writer, "index", str(write_collection(writer / "fixtures")))
    assert first.returncode == 0, first.stderr
    new = write_slice(writer / "data" / "slice.jsonl.gz", 25)
    port = free_port()
    serve = procs.start(cli("serve", "--index", str(api_host / "index"), "--port", str(port)), api_host, team.env())
    assistant = Assistant.open(reader / "index", team.settings(reader / "index"))
    askers = Askers()
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(serve, f"{api}/healthz")

        def api_ask(question: str) -> str:
            response = httpx.post(f"{api}/v1/ask", json={"question": question}, timeout=60)
            assert response.status_code == 200, response.text[:500]
            return response.json()["answer"]

        askers.start("assistant", lambda q: assistant.ask(q).text, 2)
        askers.start("api", api_ask, 2)
        started = time.monotonic()
        write = run_cli(team, writer, "index", str(writer / "data" / "slice.jsonl.gz"))
        seconds = time.monotonic() - started
        time.sleep(1.0)  # asked after the write too
        askers.join()
        assert write.returncode == 0, write.stderr
        print(f"\nwrite of {len(new)} articles: {seconds:.1f} s; asked {askers.asked}; "
              f"errors {[len(e) for e in askers.errors.values()]}")
        assert askers.errors == {"assistant": [], "api": []}, {k: v[:3] for k, v in askers.errors.items()}
        assert askers.asked["assistant"] >= 10 and askers.asked["api"] >= 10, askers.asked
        # the new articles are searchable on both reading hosts (their lexical caches caught up), no restart
        title = max((a["title"] for a in new), key=len)  # a title that names its article alone
        hits = assistant.search(title, k=5)
        wanted = next((h.article.id for h in hits if h.article.title == title), None)
        assert wanted, (title, [h.article.title for h in hits])
        found = httpx.post(f"{api}/v1/search", json={"question": title, "k": 5}, timeout=60)
        assert found.status_code == 200, found.text[:500]
        assert wanted in json.dumps(found.json())
        assert assistant.stats()["articles"] == 7 + len(new)
        assert httpx.get(f"{api}/v1/stats", timeout=30).json()["articles"] == 7 + len(new)
    finally:
        askers.join()
        assistant.close()


# ---------------------------------------------------------------- Slack replicas


def test_two_slack_replicas_behind_one_url_answer_a_retried_event_once_and_follow_up_threads(team, procs):
    pytest.importorskip("slack_bolt")
    from tests.slack_fake import BOT_USER, FakeSlack, event_callback, mention_event, message_event, post, sign

    channel, user = "C0000MAIN", "U0000USR"
    first = team.host("indexer")
    articles = first / "articles"
    articles.mkdir()
    write_jsonl(articles / "dovrin.jsonl", DOVRIN)
    (articles / "dam.txt").write_text(DAM, encoding="utf-8")
    assert run_cli(team, first, "index", str(articles)).returncode == 0
    fake = FakeSlack()
    try:
        urls = []
        for name in ("replica-1", "replica-2"):
            host, port = team.host(name), free_port()
            env = team.env(SLACK_BOT_TOKEN="xoxb-0000-test", SLACK_SIGNING_SECRET=SECRET, RAG_SLACK_API_URL=fake.url)
            proc = procs.start(cli("slack", "--http", "--port", str(port), "--index", str(host / "index")), host, env)
            urls.append(f"http://127.0.0.1:{port}/slack/events")
            wait_http(proc, f"http://127.0.0.1:{port}/healthz")

        def send(replica: int, payload: dict, retry: int = 0) -> int:
            body = json.dumps(payload)
            headers = sign(SECRET, body)
            if retry:
                headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
            return post(urls[replica], body, headers, "application/json")[0]

        def replies(thread_ts: str) -> list[str]:
            return [c.params["text"] for c in fake.called("chat.postMessage", channel=channel, thread_ts=thread_ts)]

        # the load balancer gives the event to replica 1 and Slack's retry of it to replica 2; the same message
        # also comes as a message event (another event id) to replica 2
        message = fake.add_message(channel, f"<@{BOT_USER}> What happened in Dovrin?", user=user)
        payload = event_callback(mention_event(message, channel))
        assert send(0, payload) == 200
        assert send(1, payload, retry=1) == 200
        assert send(1, event_callback(message_event(message, channel))) == 200
        fake.wait_for("chat.postMessage", thread_ts=message["ts"], timeout=60)
        time.sleep(3)  # a second answer would have come by now
        assert len(replies(message["ts"])) == 1, replies(message["ts"])
        assert "Dovrin" in replies(message["ts"])[0]

        # follow-ups in that thread, without a mention: each replica knows the thread was answered
        for n, (replica, question, expected) in enumerate(
                [(1, "Who is the mayor?", "Ostrova"), (0, "And what happened to the bridge?", "bridge")], start=2):
            follow = fake.add_message(channel, question, user=user, thread_ts=message["ts"], parent_user_id=user)
            assert send(replica, event_callback(message_event(follow, channel))) == 200
            fake.wait_for("chat.postMessage", count=n, thread_ts=message["ts"], timeout=60)
            assert expected in replies(message["ts"])[-1], replies(message["ts"])[-1]
        time.sleep(2)
        assert len(replies(message["ts"])) == 3
    finally:
        fake.stop()


# ---------------------------------------------------------------- PostgreSQL restarted


def test_postgresql_restart_under_serve_and_web_fails_cleanly_and_recovers(team, procs, pg_server):
    import httpx

    from tests.test_concurrency import _web_ask

    writer = team.host("writer")
    assert run_cli(team, writer, "index", str(write_collection(writer / "fixtures"))).returncode == 0
    api_host, web_host = team.host("api"), team.host("web")
    api_port, web_port = free_port(), free_port()
    serve = procs.start(cli("serve", "--index", str(api_host / "index"), "--port", str(api_port)), api_host,
                        team.env())
    web = procs.start(cli("web", "--index", str(web_host / "index"), "--port", str(web_port)), web_host, team.env())
    api, site = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{web_port}/"
    wait_http(serve, f"{api}/healthz")
    wait_http(web, site)
    question, expected = QUESTIONS[0]

    def api_ask() -> httpx.Response:
        return httpx.post(f"{api}/v1/ask", json={"question": question}, timeout=60)

    assert expected in api_ask().json()["answer"]
    assert expected in _web_ask(site, question)
    pg_server.stop()
    try:
        down = api_ask()
        assert down.status_code == 503, down.text[:1000]
        message = down.json()["error"]["message"]
        assert "PostgreSQL" in message and "Traceback" not in down.text and "s3cret" not in down.text, message
        shown = _web_ask(site, question)  # the chat says what is wrong, and shows no traceback
        assert "PostgreSQL" in shown and "Traceback" not in shown and expected not in shown, shown[:1000]
    finally:
        pg_server.start()
    assert expected in api_ask().json()["answer"]  # the same processes, no restart
    assert expected in _web_ask(site, question)
    for proc in (serve, web):
        assert proc.poll() is None


# ---------------------------------------------------------------- bench parity


@pytest.mark.slow
@needs_corpus
def test_bench_in_team_mode_ranks_like_local_mode(team, tmp_path):
    bench = CORPUS.parent
    runs = {}
    for mode, env in (("local", {k: v for k, v in team.env().items() if not k.startswith(("RAG_DATABASE",
                                                                                         "RAG_CHROMA"))}),
                      ("team", team.env())):
        details = tmp_path / f"{mode}.jsonl"
        done = subprocess.run(cli("bench", str(bench), "--limit", "60", "--json", "--details", str(details)),
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)["ours"]
        lines = [json.loads(line) for line in details.read_text().splitlines()]
        tops = {(d["mode"], d["question"]): [t["id"] for t in d["top10"]] for d in lines}
        runs[mode] = (result, tops, {(d["mode"], d["question"]): d["gold_ranks"] for d in lines if d["answerable"]})
    (local, local_tops, local_gold), (teamed, team_tops, team_gold) = runs["local"], runs["team"]
    assert local_tops.keys() == team_tops.keys()
    differ = {key[1] for key, top in local_tops.items() if top != team_tops[key]}
    top5 = {key[1] for key, top in local_tops.items() if top[:5] != team_tops[key][:5]}
    print(f"\nbench --limit 60: {len(local_tops)} asks; questions ranked differently: {len(differ)} in the top 10, "
          f"{len(top5)} in the top 5; local p50/p95 {local['ask_p50_ms']}/{local['ask_p95_ms']} ms, "
          f"team p50/p95 {teamed['ask_p50_ms']}/{teamed['ask_p95_ms']} ms")
    # Chroma's HNSW search is approximate and its graph depends on the insertion's threads: two local builds
    # of these 60 articles already rank 3 questions differently (adjacent swaps, on unanswerable questions
    # whose scores are close). Where the gold articles rank, and the answerable questions' top 5, must agree.
    assert len({key[1] for key, ranks in local_gold.items() if team_gold[key] != ranks}) <= 2
    assert len(top5 & {key[1] for key in local_gold}) <= 2, sorted(top5)
    # issue 16's target is p95 <= 100 ms with both servers local on a calm machine; a loaded one slows both modes
    assert teamed["ask_p95_ms"] <= max(100.0, 2 * local["ask_p95_ms"]), (local["ask_p95_ms"], teamed["ask_p95_ms"])
    for figure in ("hit@1", "mrr@10", "answer_correct"):
        assert abs(local[figure] - teamed[figure]) <= 0.08, (figure, local[figure], teamed[figure])
