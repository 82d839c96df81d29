"""What the live pages derive from a run's files (the record with its metrics, the figures,
the completions table), computed once per change of those files and shared by every
session that shows it.

A room of thirty watching one run used to rebuild the same figures thirty times every
refresh. Here each value is keyed by the run's file stamps ((mtime, size) of each file the
value is read from) plus the view's own choices (signal, evaluation step...), so the first
session after a change builds it and the others reuse the very object; a session's rerun
then costs little more than sending it. A module-level cache, not st.cache_data: that one
pickles every hit, and unpickling a plotly figure validates it again, which is most of the
cost being saved. Values are shared, so callers must not modify them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa

from core import api
from core.runtime.store import RunRecord, pid_alive

T = TypeVar("T")
FILES = ("status.json", "config.json", "tags.json", "metrics.jsonl", "samples.jsonl")
MAX_ENTRIES = 512  # a few hundred figures: every view of a few dozen live runs

_CACHE: OrderedDict[Hashable, Any] = OrderedDict()
_LOCK = threading.Lock()


def stamp(run_id: str) -> tuple[tuple[int, int] | None, ...]:
    """The identity of a run's files now: any write changes it."""
    folder = api.runs_dir() / run_id
    out: list[tuple[int, int] | None] = []
    for name in FILES:
        try:
            st = (folder / name).stat()
        except (OSError, ValueError):
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def shared(key: Hashable, build: Callable[[], T]) -> T:
    """The value for `key`, built by whichever session asks first. Two sessions asking at
    the same moment may both build it; the later simply replaces the earlier."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = build()
    with _LOCK:
        _CACHE[key] = value
        while len(_CACHE) > MAX_ENTRIES:
            _CACHE.popitem(last=False)
    return value


class FrozenFigure(go.Figure):
    """A shared figure whose dict form is made once. st.plotly_chart calls to_dict() on
    every render, a deep copy of every trace: for a figure a whole room shows, that copy
    was much of what a refresh cost. The object itself is an empty figure (copying the
    real one would validate it all again); only to_dict, all Streamlit reads, holds it."""

    def __init__(self, figure: go.Figure) -> None:
        super().__init__(layout={"template": "none"})  # the cheapest valid figure
        self._frozen = figure.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return self._frozen


def figure(key: Hashable, build: Callable[[], go.Figure]) -> FrozenFigure:
    """A figure built once per key and shared (see shared)."""
    return shared(key, lambda: FrozenFigure(build()))


def table(key: Hashable, build: Callable[[], pd.DataFrame]) -> pa.Table:
    """A table built once per key and kept in Arrow form, the form st.dataframe sends:
    each render then skips the pandas-to-Arrow conversion."""
    return shared(key, lambda: pa.Table.from_pandas(build(), preserve_index=False))


def clear() -> None:
    with _LOCK:
        _CACHE.clear()


def load_run(run_id: str) -> tuple[RunRecord | None, tuple]:
    """api.load_run, shared while the files stay the same; and the stamp to key values
    derived from it. A live run whose process died without a word (its files then never
    change) is read again, so it shows as failed at once."""
    key = ("run", str(api.runs_dir()), run_id, stamp(run_id))
    record = shared(key, lambda: api.load_run(run_id))
    if record is not None and record.status in api.ACTIVE and not pid_alive(record.pid):
        with _LOCK:
            _CACHE.pop(key, None)
        record = shared(key, lambda: api.load_run(run_id))
    return record, key


def evals_key(record: RunRecord, run_key: tuple) -> tuple:
    """A key for what is drawn from the evaluations alone (histograms, reliability,
    Pass@k, calibration over steps): they change every eval_every steps, not every step, so
    a live run's steps in between reuse those figures."""
    fingerprint = shared((run_key, "evals"), lambda: hashlib.sha1(json.dumps(
        record.evals, sort_keys=True, default=str).encode()).hexdigest())
    return ("evals", run_key[1], run_key[2], fingerprint)


def load_samples(run_key: tuple) -> tuple[list[dict[str, Any]], tuple]:
    """The run's kept completions, shared until samples.jsonl changes (at evaluations);
    and the key to derive from them."""
    key = ("samples", run_key[1], run_key[2], run_key[3][FILES.index("samples.jsonl")])
    return shared(key, lambda: api.load_samples(run_key[2])), key
