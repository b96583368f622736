"""ONNX embedder: a sentence-transformers MiniLM run by ONNX Runtime, int8 by default.

On first use the model folder (Transformer + mean Pooling + Normalize) is exported with `torch.onnx.export`
(pooling and normalisation inside the graph), its attention and layer norms fused by ONNX Runtime's
transformer optimizer and, for int8, its weights (but the feed-forward down-projections) quantized with
`quantize_dynamic`; the file is cached under `cache_dir/onnx` with a hash of the source model and the recipe
in its name, written beside and renamed so concurrent processes never see half a file. Serving needs only
onnxruntime, `tokenizers` and numpy: torch and transformers are imported by the export alone, in a child
process.

It does not chunk (texts beyond the window are cut like sentence-transformers cuts them) and does not
download anything: the model must be a local folder (or the packaged MiniLM).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from rag.embed import DEFAULT_MODEL, Coalescer, resolve_model
from rag.errors import RagError

# bump when the export or quantization recipe changes: the cached file name changes with it
RECIPE = "3"
# the fused Attention op stays fp32: quantizing it too cost cosine (corpus mean 0.9932, min 0.9861, against
# 0.9953 / 0.9896) for no measurable speed; per-tensor weights failed the gate (mean 0.954, min 0.904).
# The word embeddings (in EmbedLayerNormalization) go int8: the file shrinks from 66 to 31 MB and the session
# loads in a third of the time (what `rag ask` waits for), at mean 0.9950, min 0.9871 on the corpus.
QUANTIZED_OPS = ["MatMul", "EmbedLayerNormalization"]
# ...except the feed-forward down-projections (the MatMuls whose weight narrows, 1,536 -> 384): their input, the
# GELU output, has outliers that a run's single activation scale quantizes coarsely. Keeping them fp32 moved the
# cosine to fp32 on 384 corpus passages from mean 0.9942 / min 0.9844 to 0.9978 / 0.9916 for 17% of the speed
# (115 -> 96 passages/s); int8's loss had cost three first places on the dev questions against fp32 vectors.


class OnnxEmbedder:
    """A mean-pooled sentence-transformers model served by ONNX Runtime; batches sorted by length."""

    def __init__(self, model: str = DEFAULT_MODEL, cache_dir: Path | None = None, precision: str = "auto",
                 batch_size: int = 64, threads: int | None = None) -> None:
        self.precision = onnx_precision(precision)
        self.name = f"onnx:{model}"
        self.folder = Path(resolve_model(model))
        self.dim, self.max_tokens = _shape(self.folder)
        self.batch_size = batch_size
        self.path = onnx_model_file(model, self.folder, Path(cache_dir or Path.home() / ".cache" / "rag-news"),
                                    self.precision)
        self._tokenizer = _tokenizer(self.folder)
        self._session = _session(self.path, threads)
        self._run_options = _run_options()
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()  # the tokenizer is shared; the session itself is thread-safe
        # concurrent calls take turns and, in fp32, share session runs. Not in int8: its activations are
        # quantized with one scale per run, so a merged question's vector would depend on the others asked with
        # it (cosine to its own vector down to 0.993), and merging measured no faster than taking turns here
        self._coalesce = Coalescer(self._encode, batch_size if self.precision == "fp32" else 1)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._coalesce(texts, progress)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        ids = [self._cut(i) for i in self._ids([t.strip() for t in texts])]
        # longest first, so padding within a batch is small and the slow batches come early
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            part = order[start:start + self.batch_size]
            out[part] = self._run([ids[i] for i in part])
        return out

    def _cut(self, ids: list[int]) -> list[int]:
        """The window's first tokens and the closing [SEP], as sentence-transformers' truncation keeps them."""
        return ids if len(ids) <= self.max_tokens else ids[:self.max_tokens - 1] + ids[-1:]

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return self._session.run(["embedding"], feeds, self._run_options)[0]

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self._ids(texts)]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """The texts' token ids, whole. Without the character offsets, which nothing here reads: the same ids for
        a fifth less tokenizing (`rag index` counts every passage's tokens while it chunks)."""
        with self._lock:
            encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)  # tokenizers < 0.20.2
            return [e.ids for e in encode(texts)]


def onnx_precision(precision: str) -> str:
    """int8 unless fp32 is asked for; ONNX Runtime has no fast bf16 on CPU, so bf16 means fp32 here."""
    if precision in ("auto", "int8"):
        return "int8"
    if precision in ("fp32", "bf16"):
        return "fp32"
    raise ValueError(f"unknown precision {precision!r} for an onnx embedder: use auto, int8 or fp32")


def _shape(folder: Path) -> tuple[int, int]:
    """(dimension, window) of a Transformer + mean Pooling (+ Normalize) folder; ValueError for anything else."""
    from rag.embed import _local_model_shape

    dim, window = _local_model_shape(folder)
    try:
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        pooling = {}
    if dim is None or window is None or not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{folder}: the onnx embedder needs a local sentence-transformers folder with a "
                         "Transformer, mean pooling and max_seq_length (sentence_bert_config.json)")
    return dim, window


def _tokenizer(folder: Path):
    """The folder's tokenizer.json, neither cutting nor padding: `embed` cuts at the window itself, so one
    tokenizer (half a second to load on a busy machine) serves both embedding and counting."""
    from tokenizers import Tokenizer

    file = folder / "tokenizer.json"
    if not file.exists():
        raise ValueError(f"{folder}: no tokenizer.json (the onnx embedder reads the fast tokenizer's file)")
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle workers sleep instead of spinning: `rag index` runs this model beside its own work (and a shared machine
    # beside others'), where spinning took a tenth more CPU for the same vectors
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_options():
    """Each run gives its arena memory back when it ends: a batch of 64 passages at the 256-token window takes
    ~450 MB (the fused attention's fp32 scores alone are 200 MB), which the arena otherwise keeps (rounded up to
    ~650 MB) for the whole process, under Chroma's writes and everything else `rag index` holds. Kept within a
    run, so the run itself is as fast (without the arena, every allocation is the system's: a fifth slower)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def onnx_model_file(model: str, folder: Path, cache_dir: Path, precision: str) -> Path:
    """The cached ONNX file of `model` (found in `folder`) at `precision`, exported first when missing."""
    label = re.sub(r"[^\w.-]+", "_", model).strip("_.")[-60:] or "model"
    path = cache_dir / "onnx" / f"{label}-{_fingerprint(folder)}-{precision}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"exporting {model} to ONNX ({precision}) in {path} (once; about a minute)...", file=sys.stderr,
          flush=True)
    started = time.monotonic()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        _build_aside(folder, tmp, precision)
        tmp.replace(path)  # atomic: a reader sees no file or the whole one
        for stale in path.parent.glob(f"{label}-*-{precision}.onnx"):
            if stale != path:  # an earlier recipe or model version; a process that loaded it keeps its copy
                stale.unlink(missing_ok=True)
    finally:
        for leftover in (tmp, tmp.with_suffix(".fp32.tmp")):
            leftover.unlink(missing_ok=True)
    print(f"exported {model} to ONNX in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return path


def _build_aside(folder: Path, out: Path, precision: str) -> None:
    """Export (and quantize) in a child process: torch and transformers, which the export alone needs, would
    otherwise stay in this one, half a gigabyte on top of an index run's peak."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-m", "rag.embed_onnx", str(folder), str(out), precision],
                          env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0 or not out.exists():
        raise RagError(f"exporting {folder} to ONNX failed: {done.stderr.strip()[-2000:]}")


def build(folder: Path, out: Path, precision: str) -> None:
    """The ONNX file of the model in `folder` at `precision`, written to `out` (`_build_aside` runs this)."""
    fp32 = out.with_suffix(".fp32.tmp")
    try:
        export_onnx(folder, fp32)
        if precision == "int8":
            quantize(fp32, out)
        else:
            fp32.replace(out)
    finally:
        fp32.unlink(missing_ok=True)


def _fingerprint(folder: Path) -> str:
    """A short hash of the model's files (size and mtime: reading 90 MB on every start would cost more
    than the start itself) and of the recipe."""
    digest = hashlib.sha256(RECIPE.encode())
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in (".json", ".safetensors", ".bin", ".txt"):
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def export_onnx(folder: Path, out: Path) -> None:
    """Transformer + mean pooling + L2 normalisation as one fp32 graph with dynamic batch and length,
    then attention, GELU and layer norms fused by ONNX Runtime's BERT optimizer."""
    import torch
    from transformers import AutoModel

    from rag.embed import quiet_loading

    with quiet_loading():
        bert = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    model = _Pooled(bert)
    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    raw = out.with_suffix(".raw.tmp")
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # the tracer's notes on Python conditions in the mask code: they hold for any batch without a cache
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(raw), dynamo=False,
                              input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["embedding"], opset_version=17,
                              dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                            "embedding": {0: "batch"}})
        _fuse(raw, out, bert.config.num_attention_heads, bert.config.hidden_size)
    finally:
        raw.unlink(missing_ok=True)


def _fuse(raw: Path, out: Path, heads: int, hidden: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    optimized.save_model_to_file(str(out))


def quantize(fp32: Path, out: Path) -> None:
    """MatMul (but down-projection) and word-embedding weights to int8 per channel, activations quantized at
    run time (dynamic)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the fused ops (ONNX Runtime's com.microsoft domain) defeat ONNX shape inference: say their outputs are float
    quantize_dynamic(str(fp32), str(out), op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                     reduce_range=False, weight_type=QuantType.QInt8, nodes_to_exclude=_down_projections(fp32),
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})


def _down_projections(path: Path) -> list[str]:
    """The MatMul nodes whose constant weight maps more inputs than outputs (a feed-forward block's second one)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul"
            and any(len(shapes.get(x, ())) == 2 and shapes[x][0] > shapes[x][1] for x in node.input)]


def _pooled_module():
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return Pooled


def _Pooled(bert):  # noqa: N802 - built lazily so importing this module does not import torch
    return _pooled_module()(bert)


if __name__ == "__main__":  # the child of `_build_aside`: python -m rag.embed_onnx FOLDER OUT PRECISION
    build(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
