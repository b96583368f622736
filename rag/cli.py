"""The `rag` command: a thin layer over `rag.api.Assistant`.

Reads `Settings` from the environment (prefix RAG_) once, applies command-line
overrides, calls the facade, and formats what it returns. No retrieval or
answering logic lives here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from datetime import date
from pathlib import Path

from rag.config import Settings
from rag.errors import IndexError_, RagError, UserError
from rag.types import Answer, Filters, Message


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad RAG_* value
        print(f"rag: {settings_error(exc)}", file=sys.stderr)
        return 2
    if getattr(args, "index", None):
        settings = settings.model_copy(update={"index_dir": Path(args.index)})
    if getattr(args, "llm", None):
        settings = settings.model_copy(update={"llm": args.llm})
    _quiet_libraries(whole_process=argv is None)
    try:
        code = args.func(args, settings)
    except KeyboardInterrupt:
        code = 130
    except RagError as exc:  # UserError, or IndexError_: a busy, broken, read-only or full index
        print(f"rag: {exc}", file=sys.stderr)
        code = 2
    if argv is None and args.command == "index":
        _leave(code)
    return code


def _leave(code: int) -> None:
    """End a `rag index` process now, without the interpreter's teardown: freeing Chroma's loaded vector indexes,
    the models and a thousand modules took a third of a second or more after the work was done. Everything is
    committed by then (SQLite and Chroma's log are; the lexical files are synced and the writer lock is released
    with the process), so only the output is flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return int(text)


def settings_error(exc: ValueError) -> str:
    """One line per bad setting: "RAG_TOP_K=abc: Input should be a valid integer"."""
    errors = getattr(exc, "errors", lambda: [])()
    if not errors:
        return str(exc)
    return "; ".join(f"RAG_{'_'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}" for e in errors)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag", description="Ask questions about news articles, with cited passages.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("index", help="index files and folders, or http(s) urls of RSS/Atom feeds and article pages "
                                     "(default: seeds/)")
    s.add_argument("paths", nargs="*", default=["seeds"])
    s.add_argument("--prune", action="store_true",
                   help="remove articles whose files are gone (in team mode: this host's files under PATHS)")
    s.add_argument("--rebuild", action="store_true", help="delete the index and build it again")
    s.add_argument("--yes", action="store_true",
                   help="with --rebuild in team mode (RAG_DATABASE_URL): yes, delete the collection every host shares")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("ask", help="answer one question")
    s.add_argument("question")
    s.add_argument("--json", action="store_true")
    s.add_argument("-k", type=_positive, default=None, help="passages to retrieve")
    s.add_argument("--stream", action="store_true",
                   help="print the answer as it is written (with --json: to stderr, the JSON at the end)")
    _filter_args(s)
    s.set_defaults(func=cmd_ask)

    s = sub.add_parser("chat", help="multi-turn chat in the terminal")
    s.add_argument("--stream", action="store_true", help="print each answer as it is written")
    _filter_args(s)
    s.set_defaults(func=cmd_chat)

    s = sub.add_parser("show", help="an article's metadata and full text")
    s.add_argument("article_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("watch", help="keep feeds indexed: fetch them again every interval (Ctrl-C stops)")
    s.add_argument("urls", nargs="+", metavar="FEED_URL")
    s.add_argument("--every", default="15m", help="interval: 90s, 15m, 1h (default 15m)")
    s.add_argument("--times", type=int, default=0, help=argparse.SUPPRESS)  # rounds, then stop (tests)
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("stats", help="what the index holds")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stats)

    for name in ("index", "ask", "chat", "show", "stats", "watch"):
        sub.choices[name].add_argument("--index", metavar="DIR", help="index folder (default: index/, RAG_INDEX_DIR)")
    _add_optional_commands(sub)
    for name in ("ask", "chat", "web", "slack", "serve"):
        sub.choices[name].add_argument(
            "--llm", metavar="SPEC", type=_llm_spec,
            help="extractive (default), openai:MODEL or ollama:MODEL (RAG_LLM)")
    return p


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Commands whose work lives in other modules, imported only when run."""
    s = sub.add_parser("web", help="start the web chat (gradio)")
    s.add_argument("--index", metavar="DIR", help="index folder (default: index/, RAG_INDEX_DIR)")
    s.add_argument("--host", default="127.0.0.1", type=_bracketed,
                   help="address to listen on; an IPv6 one such as :: works with or without brackets")
    s.add_argument("--port", type=int, default=7860)
    s.set_defaults(func=lambda a, st: _run_module("ui.web", a, st))

    s = sub.add_parser("slack", help="start the Slack bot (Socket Mode, or --http for the Events API)")
    s.add_argument("--index", metavar="DIR", help="index folder (default: index/, RAG_INDEX_DIR)")
    s.add_argument("--http", action="store_true", help="serve the Events API over HTTP instead of Socket Mode")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on with --http (behind an HTTPS proxy)")
    s.add_argument("--port", type=int, default=3000)
    s.set_defaults(func=lambda a, st: _run_module("ui.slack", a, st))

    s = sub.add_parser("serve", help="serve the HTTP API: REST with OpenAPI, and OpenAI-compatible chat (FastAPI)")
    s.add_argument("--index", metavar="DIR", help="index folder (default: index/, RAG_INDEX_DIR)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback only with RAG_API_KEYS)")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=lambda a, st: _run_module("ui.http_api", a, st))

    s = sub.add_parser("remove", help="delete articles from every part of the index (a retracted story); "
                                      "`rag index` of their folder does not bring them back")
    s.add_argument("article_ids", nargs="+", metavar="ARTICLE_ID")
    s.add_argument("--index", metavar="DIR", help="index folder (default: index/, RAG_INDEX_DIR)")
    s.set_defaults(func=cmd_remove)

    s = sub.add_parser("bench", help="benchmark retrieval and answers (optionally against two LlamaIndex pipelines)")
    s.add_argument("bench_dir", type=Path, help="folder with articles.jsonl.gz and questions-dev.jsonl")
    s.add_argument("--questions", type=Path, action="append", metavar="FILE",
                   help="questions file, repeatable (default: BENCH_DIR/questions-dev.jsonl and the project's "
                        "benchmarks/unanswerable-<BENCH_DIR name>.jsonl when there is one)")
    s.add_argument("--peer", action="store_true",
                   help="also run the LlamaIndex quick-start and BM25+vector hybrid on the same data")
    s.add_argument("--details", type=Path, metavar="FILE",
                   help="write one JSON line per question, system and mode (gold ranks, top 10, answer, verdict)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--limit", type=int, help="use only the first N articles (and the questions they answer)")
    s.set_defaults(func=lambda a, st: _run_module("rag.bench", a, st))


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets ("[::]"): gradio puts the host into urls as it is, and "http://:::7860"
    is no url (it crashed `rag web --host ::`)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _run_module(name: str, args: argparse.Namespace, settings: Settings) -> int:
    """Import a command's module on demand (gradio and slack-bolt are slow to import)."""
    import importlib

    return importlib.import_module(name).main(args, settings)


def _filter_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--source", action="append", default=[], help="only this source (repeatable)")
    s.add_argument("--since", type=_date, help="only articles published on or after YYYY-MM-DD")
    s.add_argument("--until", type=_date, help="only articles published on or before YYYY-MM-DD")


def _llm_spec(value: str) -> str:
    from rag.llm import LLMConfigError, parse_spec

    try:
        parse_spec(value)
    except LLMConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2022-03-01") from None


def filters_of(args: argparse.Namespace) -> Filters:
    try:
        return Filters(tuple(args.source), args.since, args.until)
    except ValueError as exc:  # --since after --until
        raise UserError(f"--since/--until: {exc}") from None


def _quiet_libraries(whole_process: bool) -> None:
    """No transformers warnings or Hugging Face progress bars. A `rag` process says so through their environment
    variables, read when they are imported, so a command that never loads a model never imports them
    (transformers alone takes seconds); set explicitly, the variables win. `main([...])` called inside another
    program (tests) leaves that program's environment alone."""
    if whole_process:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already: the variables are read
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def open_assistant(settings: Settings, must_exist: bool = True):
    """The facade for the configured index (`rag.api.open_assistant`, imported when a command needs it)."""
    from rag.api import open_assistant

    return open_assistant(settings, must_exist)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from rag.feeds import is_url
    from rag.ingest import InputError

    missing = [p for p in args.paths if not is_url(p) and not Path(p).exists()]
    if missing:
        from rag.ingest import escape

        raise UserError(f"{escape(missing[0])}: no such file or folder")
    if args.rebuild:
        from rag.api import delete_index

        delete_index(settings, confirmed=args.yes)
    from rag.api import Stopped
    from rag.progress import ProgressPrinter

    assistant = open_assistant(settings, must_exist=False)
    printer = ProgressPrinter(sys.stderr, settings.progress_every)
    try:
        report = assistant.index(args.paths, prune=args.prune, on_progress=printer)
    except (InputError, IndexError_) as exc:
        raise UserError(str(exc)) from None
    except Stopped as stop:
        printer.clear()
        stored = len(stop.report.indexed) + len(stop.report.replaced)
        print(f"stopped: {stored} articles stored; run again to continue", file=sys.stderr)
        return 130
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    print(report.summary())
    found = report.indexed or report.replaced or report.unchanged or report.duplicates
    if not found and report.skipped and any(is_url(p) for p in args.paths):
        print("rag: nothing could be fetched", file=sys.stderr)
        return 1
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag.api import QuestionError

    assistant = open_assistant(settings)
    try:
        if args.stream:
            answer = print_stream(assistant.stream(args.question, filters_of(args), k=args.k), args.json)
        else:
            answer = assistant.ask(args.question, filters_of(args), k=args.k)
    except QuestionError as exc:
        raise UserError(str(exc)) from None
    if answer.notice:
        print(f"note: {answer.notice}", file=sys.stderr)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    elif not args.stream:
        print(format_answer(answer))
    return 0


def print_stream(stream, to_stderr: bool = False) -> Answer:
    """Print an answer as it is written, then its timeline and sources.

    The pieces are checked text (an LLM's sentences once each passed the check) and joined they are the
    answer's text, so nothing printed is taken back. With `to_stderr` the pieces go to stderr and nothing
    else is printed.
    """
    from dataclasses import replace

    out = sys.stderr if to_stderr else sys.stdout
    for piece in stream:
        out.write(piece)
        out.flush()
    answer = stream.result()
    if to_stderr:
        out.write("\n")
        return answer
    rest = format_answer(replace(answer, text=""))  # the timeline and the sources
    print("\n\n" + rest if rest else "")
    return answer


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from rag.api import QuestionError

    assistant = open_assistant(settings)
    stats = assistant.stats()
    print(f"{stats['articles']} articles, {stats['chunks']} passages. Ask a question (quit, exit or Ctrl-D to end).")
    messages: list[Message] = []
    while True:
        try:
            question = input("\n> ").strip()
        except EOFError:
            print()
            return 0
        if question.lower() in ("quit", "exit"):
            return 0
        if not question:
            continue
        messages.append(Message("user", question))
        try:
            if args.stream:
                answer = print_stream(assistant.stream_chat(messages, filters_of(args)))
            else:
                answer = assistant.chat(messages, filters_of(args))
        except QuestionError as exc:
            print(f"rag: {exc}")
            messages.pop()
            continue
        messages.append(Message("assistant", answer.text))
        if answer.notice:
            print(f"note: {answer.notice}", file=sys.stderr)
        if not args.stream:
            print(format_answer(answer))


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    article = open_assistant(settings).article(args.article_id)
    if article is None:
        raise UserError(f"no article with id {args.article_id}")
    if args.json:
        print(json.dumps(article.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{article.title}\n{article.source}  {article.published}  {article.url or article.path}\n")
        print(article.text)
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    """`rag remove ARTICLE_ID...`: unknown ids are named on stderr (exit 1 when none was removed)."""
    removed = open_assistant(settings).remove(args.article_ids)
    for unknown in dict.fromkeys(a for a in args.article_ids if a not in removed):
        print(f"rag: no article with id {unknown}", file=sys.stderr)
    print(f"{len(removed)} removed" + (f": {' '.join(removed)}" if removed else ""))
    return 0 if removed else 1


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    import re
    import time

    from rag.feeds import is_url

    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", args.every.strip().lower())
    if not match:
        raise UserError(f"--every {args.every}: give an interval such as 90s, 15m or 1h")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    bad = [u for u in args.urls if not is_url(u) or not u.lower().startswith(("http://", "https://"))]
    if bad:
        raise UserError(f"{bad[0]}: not an http(s) url")
    assistant = open_assistant(settings, must_exist=False)
    rounds = 0
    try:
        while True:
            report = assistant.index(args.urls)
            for skipped in report.skipped:
                print(f"skipped {skipped}", file=sys.stderr)
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {report.summary()}", flush=True)
            rounds += 1
            if args.times and rounds >= args.times:
                return 0
            time.sleep(seconds)
    finally:
        assistant.close()


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    stats = open_assistant(settings).stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            print(f"{key}: {value}")
    return 0


def format_answer(answer: Answer) -> str:
    """Answer text, then the numbered sources with their quotes."""
    sources = format_sources(answer)
    timeline = "\n".join(["Timeline:"] + [f"  {p.date}  {_short(p.text, 160)} {''.join(f'[{n}]' for n in p.citations)}"
                                          for p in answer.timeline]) if answer.timeline else ""
    return "\n\n".join(x for x in (textwrap.fill(answer.text, 100), timeline, sources) if x)


def format_sources(answer: Answer) -> str:
    """"Sources:" and the numbered citations with their quotes ("" when there are none)."""
    lines = ["Sources:"] if answer.citations else []
    for c in answer.citations:
        where = " · ".join(x for x in (f"id {c.article_id}", c.source, c.published, c.url or c.path) if x)
        lines.append(f"[{c.n}] {c.title}\n    {where}\n    chars {c.start}-{c.end}: \u201c{_short(c.quote)}\u201d")
    return "\n".join(lines)


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


if __name__ == "__main__":
    sys.exit(main())
