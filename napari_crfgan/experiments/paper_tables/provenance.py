"""Where a paper-tables run came from: the machine, the commit and the command line (all in results.md)."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
from pathlib import Path

import torch

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # napari_crfgan/


def machine_info() -> dict:
    """CPU model and count, torch threads in force, torch / Python versions, platform, CUDA device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # not Linux: keep platform's (often vaguer) answer
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def git_commit(root: Path | None = None) -> str:
    """The short commit of the checkout holding the package, saying so when the package has uncommitted edits."""
    root = root or PACKAGE_DIR.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", PACKAGE_DIR.name],
                               cwd=root, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return sha + (f" (with uncommitted changes under {PACKAGE_DIR.name}/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def command_line(budget: str, out, work, device: str, threads: int | None, fresh: bool) -> str:
    """The `crfgan paper-tables` command line that runs with these settings (recorded in results.md)."""
    parts = ["crfgan", "paper-tables", "--budget", budget, "--out", str(out), "--work", str(work),
             "--device", device]
    if threads is not None:
        parts += ["--threads", str(threads)]
    if fresh:
        parts.append("--fresh")
    return " ".join(shlex.quote(p) for p in parts)
