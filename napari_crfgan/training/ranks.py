"""Training on several processes for the Train widget: torchrun, started by the training child.

The widget's "all GPUs (N)" runs the path `torchrun --nproc_per_node=N -m napari_crfgan.cli
train` runs, with this module as the worker: the child (`child.py`) writes the options to a
file, starts torchrun in a session of its own and relays what rank 0 sends back over a local
connection, authenticated by a one-time key. Every rank prepares and trains as a one-process
child does (`train_and_send`); rank 0's reports, warnings and errors reach the parent.

A stop is SIGTERM to the whole group, which every rank takes as a stop request after the
current iteration (the trainer writes one checkpoint). torchrun gives its workers 30 s
after that before it kills them. A run has succeeded when rank 0 says it ended, whatever
exit status torchrun reports after a stop.
"""
from __future__ import annotations

import collections
import os
import pickle
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Callable

from .. import distributed
from .sending import POLL_S, portable, relay_warnings, train_and_send
from .options import TrainOptions
from .trainer import TrainingError

ADDRESS_ENV = "NAPARI_CRFGAN_PARENT"  # host:port of the child's listener, for rank 0
KEY_ENV = "NAPARI_CRFGAN_KEY"  # the listener's one-time key, in hex


def torchrun_command(processes: int) -> list[str]:
    """torchrun (the module its console script runs) for one machine with `processes` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


# ---- the training child: start torchrun, relay rank 0 --------------------------------
def train_on_ranks(options: TrainOptions, target: str, send: Callable[[str, object], None],
                   stopping: Callable[[], bool]) -> None:
    """Train `options` on `options.processes` torchrun ranks, sending what rank 0 sends; raise its error."""
    key = secrets.token_bytes(16)
    with tempfile.TemporaryDirectory() as tmp, Listener(("127.0.0.1", 0), authkey=key) as listener:
        job = Path(tmp) / "job.pkl"
        job.write_bytes(pickle.dumps((options, target)))
        host, port = listener.address
        env = {**os.environ, ADDRESS_ENV: f"{host}:{port}", KEY_ENV: key.hex()}
        proc = subprocess.Popen([*torchrun_command(options.processes), "-m", __name__, str(job)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True).start()  # never a full pipe
        connections: list = []
        threading.Thread(target=_accept, args=(listener, connections), daemon=True).start()
        try:
            ended, error = _relay(proc, connections, send, stopping)
        finally:
            if proc.poll() is None:  # the child was told to go (an error here): take the ranks with it
                _signal_group(proc, signal.SIGKILL)
            proc.wait()
    if error is not None:
        raise pickle.loads(error[0])
    if not ended:
        last = next((line.strip() for line in reversed(tail) if line.strip()), "no message")
        raise TrainingError(f"the {options.processes} training processes ended with exit status "
                            f"{proc.returncode}: {last}")


def _accept(listener: Listener, connections: list) -> None:
    try:
        connections.append(listener.accept())
    except OSError:  # the listener closed before rank 0 connected (torchrun failed early)
        pass


def _relay(proc: subprocess.Popen, connections: list, send, stopping) -> tuple[bool, tuple | None]:
    """Pass on rank 0's messages until torchrun has exited and the connection is drained; stop the group
    once `stopping()`. Returns (rank 0 ended, rank 0's error)."""
    asked, ended, error = False, False, None
    while True:
        if not asked and stopping():
            _signal_group(proc, signal.SIGTERM)
            asked = True
        conn = connections[0] if connections else None
        if conn is None:
            if proc.poll() is not None:
                return ended, error
            time.sleep(POLL_S)
            continue
        try:
            if not conn.poll(POLL_S):
                if proc.poll() is not None and not conn.poll(POLL_S):
                    return ended, error
                continue
            kind, payload = conn.recv()
        except (EOFError, OSError):  # rank 0 closed its end: nothing more will come
            proc.wait()
            return ended, error
        if kind == "ended":
            ended = True
        elif kind == "error":
            error = payload
        else:
            send(kind, payload)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- a rank ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    from ..runtime import process_device

    argv = sys.argv[1:] if argv is None else argv
    options, target = pickle.loads(Path(argv[0]).read_bytes())  # written by this package's child just now
    asked = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: asked.set())
    process_device(options.device)  # join the group
    conn = None
    if distributed.is_main():
        host, port = os.environ[ADDRESS_ENV].rsplit(":", 1)
        conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ[KEY_ENV]))

    def send(kind: str, payload) -> None:
        if conn is not None:
            conn.send((kind, payload))

    try:
        if conn is not None:
            relay_warnings(send)
        train_and_send(options, target, send, asked.is_set)
        send("ended", None)
    except BaseException as exc:
        send("error", (portable(exc), traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        distributed.shutdown()
        if conn is not None:
            conn.close()


if __name__ == "__main__":
    main()
