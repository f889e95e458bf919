"""The scorer in a process of its own, so that one monitor uses two cores.

Why: featurizing and the model (~8 ms of CPU per window with the shipped model) run on the score
thread, which shares the monitor's GIL with the consume thread (Kafka, JPEG decode, alignment) and
its own event lifecycle and SQL commit. On two cores the score thread then waits for the GIL as
often as it computes: in one process it falls behind at ~80-90 windows a second (100 stations)
with the second core mostly idle (docs/performance.md, "Real time"). Here the model runs in a
child process with its own interpreter; the monitor keeps consuming, committing and running the
lifecycle while the child scores.

`ScoringProcess` is a `StreamScorer` (services/monitor/scoring.py): the score stage cannot tell
it from the in-process `models.scorer.AnomalyScorer`, and its scores are the same numbers (the
child runs that very scorer). The per-asset stream state (log memory, baseline adaptation) lives
in the child; every call that changes it returns the new state of the assets it touched, so the
score stage's state reads at commit time cost no round trip.

Messages are pickled windows and scores over a pipe. A window's 8 frames are ~460 KB at 160x120;
the pipe's copies cost well under a millisecond per window (`fusionwatch bench pipeline --modes
score-process`). If the child dies, the next call raises `ScoringProcessError`: the score stage
stops the monitor, as for any scoring failure, and its supervisor restarts it from the offsets in
SQL (nothing is lost; what was not committed is scored again).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

from schemas.envelope import DecodeOptions
from schemas.errors import FusionwatchError

log = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0  # loading torch, the checkpoint and MiniLM on a slow disk


class ScoringProcessError(FusionwatchError):
    pass


class ScoringProcess:
    """A `StreamScorer` whose model runs in a child process (see the module docstring)."""

    def __init__(self, checkpoint: Path, device: str = "cpu", threads: int = 1):
        # a fresh interpreter (never a fork of a process that holds Kafka clients and threads),
        # started as a module so that it imports nothing of the parent's __main__
        mine, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--fd", str(theirs.fileno()), "--checkpoint", str(checkpoint),
             "--device", device, "--threads", str(threads)], pass_fds=[theirs.fileno()])
        theirs.close()
        self._conn = Connection(mine.detach())
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise ScoringProcessError(f"the scoring process did not load {checkpoint} in {START_TIMEOUT_S:.0f} s")
        info = self._receive()
        self.version: str = info["version"]
        self.decode_options: DecodeOptions = info["decode_options"]
        self.calibration = info["calibration"]
        self.device: str = info["device"]
        self.model_cpu_s = 0.0
        self._ahead: deque[list] = deque()  # what the child is preparing, in order (`prepare_ahead`)
        self._lock = threading.Lock()  # the consume thread prepares while the score thread calls
        self._states: dict[str, tuple[dict, dict[str, float], Any]] = {}
        log.info("scoring process pid %d: model %s on %s", self.pid, self.version, self.device)

    @property
    def pid(self) -> int:
        return self._proc.pid

    # ── Scorer ─────────────────────────────────────────────────────────────────────────────
    def score(self, windows: list) -> Sequence:
        with self._lock:
            if self._ahead and _same(self._ahead[0], windows):
                self._ahead.popleft()
                self._send("score_prepared")  # its features and forward pass are done already
            else:  # not what was prepared: the child drops what it prepared, as here
                self._ahead.clear()
                self._send("score", windows)
        return self._reply()

    def prepare_ahead(self, windows: list) -> None:
        """Start the windows' features and forward pass in the child now, without waiting for
        it. The score stage calls this, from the consume thread, as it queues each batch: the
        child then works through the queued batches while the monitor runs the lifecycle and
        commits to SQL. A later `score` of the same windows, in the same order, only finishes
        them; those parts depend on no stream state (`AnomalyScorer.prepare`), so the scores
        are the same either way."""
        with self._lock:
            self._send("prepare", windows)
            self._ahead.append(windows)

    # ── StreamScorer: the child's state, mirrored from each reply ──────────────────────────
    def stream_state(self, asset: str) -> dict:
        return self._state_of(asset)[0]

    def adaptation(self, asset: str) -> dict[str, float]:
        return self._state_of(asset)[1]

    def baseline_phase(self, asset: str):
        return self._state_of(asset)[2]

    def restore_stream(self, asset: str, state: dict) -> None:
        self._call("restore_stream", asset, state)

    def forget_stream(self, asset: str) -> None:
        self._call("forget_stream", asset)
        self._states.pop(asset, None)

    def rebaseline(self, asset: str) -> None:
        self._call("rebaseline", asset)

    def _state_of(self, asset: str) -> tuple[dict, dict[str, float], Any]:
        if asset not in self._states:  # an asset no reply has named yet: its state as the child has it
            self._call("describe", asset)
        return self._states[asset]

    # ── the pipe ───────────────────────────────────────────────────────────────────────────
    def _send(self, method: str, *args) -> None:
        try:
            self._conn.send_bytes(pickle.dumps((method, args), protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, EOFError, OSError) as e:
            raise self._died() from e

    def _call(self, method: str, *args):
        with self._lock:
            self._send(method, *args)
        return self._reply()

    def _reply(self):
        """The reply to the last call (only the score thread calls and waits): the call's value;
        asset -> (stream state, adaptation, baseline phase) of the assets it touched; the child's
        CPU seconds inside the model's forward pass so far."""
        value, states, self.model_cpu_s = self._receive()
        self._states.update(states)
        return value

    def _receive(self):
        try:
            kind, payload = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as e:
            raise self._died() from e
        if kind == "error":
            raise ScoringProcessError(f"the scoring process failed:\n{payload}")
        return payload

    def _died(self) -> ScoringProcessError:
        try:
            code: int | None = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return ScoringProcessError(f"the scoring process (pid {self._proc.pid}) exited with code {code}; "
                                   "the monitor stops and its restart scores again from the offsets in SQL")

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._conn.send_bytes(pickle.dumps(("stop", ())))
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._conn.close()


# ── the child ──────────────────────────────────────────────────────────────────────────────

def _serve(conn: Connection, checkpoint: str, device: str, threads: int) -> None:
    """The child's loop: load the scorer, then answer calls until told to stop or the pipe closes."""
    # the parent decides when the child stops: a Ctrl-C in a terminal reaches the whole process
    # group, and the parent's shutdown still needs the child to score its last batch
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch

        torch.set_num_threads(threads)
        from models.scorer import AnomalyScorer

        scorer = AnomalyScorer.load(Path(checkpoint), device=device)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        _send(conn, "error", traceback.format_exc())
        return
    _send(conn, "ok", {"version": scorer.version, "decode_options": scorer.decode_options,
                       "calibration": scorer.calibration, "device": scorer.device})
    model_cpu = [0.0]  # CPU seconds inside the model's forward pass (what a GPU would take over)
    forward = scorer.model.forward

    def timed_forward(*a, **k):
        t0 = time.thread_time()
        try:
            return forward(*a, **k)
        finally:
            model_cpu[0] += time.thread_time() - t0

    scorer.model.forward = timed_forward
    # the parent's sends never wait for this loop: a thread reads the pipe as messages come
    inbox: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_read, args=(conn, inbox), name="fw-scorer-inbox", daemon=True).start()
    # windows to prepare, in order, with their `prepare` once done (or the traceback it raised):
    # prepared only while no call waits, so that a call is answered first (the parent waits for
    # it; it does not wait for a prepare)
    ahead: deque[list] = deque()
    while True:
        todo = next((entry for entry in ahead if entry[1] is None), None)
        if todo is not None and inbox.empty():
            _prepare(scorer, todo)
            continue
        raw = inbox.get()
        if raw is None:
            return  # the parent is gone
        method, args = pickle.loads(raw)
        if method == "stop":
            return
        if method == "prepare":  # no reply: the parent goes on meanwhile
            ahead.append([args[0], None])
            continue
        try:
            if method in ("score", "score_prepared"):
                if method == "score_prepared":
                    entry = ahead.popleft()
                    if entry[1] is None:
                        _prepare(scorer, entry)
                    windows, prepared = entry
                else:
                    windows, prepared = args[0], None
                    ahead.clear()
                if isinstance(prepared, str):
                    raise ScoringProcessError(prepared)
                value: Any = scorer.score(windows, prepared)
                assets = {w.asset for w in windows}
            elif method == "describe":
                value, assets = None, {args[0]}
            else:  # restore_stream, forget_stream, rebaseline
                value, assets = getattr(scorer, method)(*args), {args[0]}
            states = {a: (scorer.stream_state(a), scorer.adaptation(a), scorer.baseline_phase(a)) for a in assets}
            _send(conn, "ok", (value, states, model_cpu[0]))  # plain tuples: this module runs as __main__ here
        except Exception:  # noqa: BLE001 - the parent raises it in the score stage
            _send(conn, "error", traceback.format_exc())


def _prepare(scorer, entry: list) -> None:
    try:
        entry[1] = scorer.prepare(entry[0])
    except Exception:  # noqa: BLE001 - raised by the `score_prepared` of these windows
        entry[1] = traceback.format_exc()


def _read(conn: Connection, inbox: queue.Queue[bytes | None]) -> None:
    try:
        while True:
            inbox.put(conn.recv_bytes())
    except (EOFError, OSError):
        inbox.put(None)


def _same(a: list, b: list) -> bool:
    """The same windows (the very objects), in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _send(conn: Connection, kind: str, payload) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fusionwatch's scoring process (started by the monitor, not by hand)")
    ap.add_argument("--fd", type=int, required=True, help="the socket to the monitor")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s scorer %(name)s: %(message)s")
    _serve(Connection(args.fd), args.checkpoint, args.device, args.threads)


if __name__ == "__main__":
    main()
