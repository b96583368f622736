"""The distilled static model is published to the cache whole, even when two processes distil it at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rag.embed import _publish


class Distilled:
    """What `model2vec.distill` returns, as far as publishing goes: `save_pretrained` writes a folder (slowly,
    so two savers overlap). Not the real model: distillation takes a minute and is not the subject here."""

    def __init__(self, tag: str, entered: threading.Barrier) -> None:
        self.tag, self.entered = tag, entered

    def save_pretrained(self, path: str) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_text(self.tag * 1000)
        self.entered.wait(timeout=10)  # both are half-way through saving
        time.sleep(0.05)
        (folder / "config.json").write_text(f'{{"tag": "{self.tag}"}}')


def test_two_distillations_at_once_both_end_with_one_whole_model(tmp_path: Path) -> None:
    folder = tmp_path / "model2vec" / "all-MiniLM-L6-v2"
    entered, errors = threading.Barrier(2), []

    def publish(tag: str) -> None:
        try:
            _publish(Distilled(tag, entered), folder)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    tag = (folder / "config.json").read_text()[9]
    assert (folder / "model.safetensors").read_text() == tag * 1000  # one saver's files, not a mix
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no leftovers


def test_a_failed_save_leaves_nothing_behind(tmp_path: Path) -> None:
    class Broken:
        def save_pretrained(self, path: str) -> None:
            (Path(path) / "half").write_text("x")
            raise OSError("disk full")

    folder = tmp_path / "model2vec" / "m"
    with pytest.raises(OSError, match="disk full"):
        _publish(Broken(), folder)
    assert list(folder.parent.iterdir()) == []
