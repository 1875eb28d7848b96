"""Replay of every input that ever broke a parser (tests/corpus/<kind>/): success or the project's
own error, never a crash, within a time bound; ``expect-error-*`` inputs must be refused."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_targets as ft  # noqa: E402

FILES = sorted(p for kind in ft.TARGETS for p in (ft.CORPUS / kind).glob("*") if p.is_file())


def test_the_corpus_holds_the_known_hostile_inputs():
    names = {p.name for p in FILES}
    for must in ("expect-error-alias-bomb.yaml", "expect-error-recursive-alias.yaml", "expect-error-huge-requests.yaml",
                 "expect-error-yes-for-number.yaml", "expect-error-huge-channel-id.arrows", "name-dotdot.yaml"):
        assert must in names


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_input(path: Path):
    kind = path.parent.name
    data = path.read_bytes()
    t0 = time.monotonic()
    outcome = ft.TARGETS[kind](data)  # anything but StoragecarbonError propagates and fails the test
    assert time.monotonic() - t0 < 2.0
    if path.name.startswith("expect-error-"):
        assert outcome == "error"
