"""Provenance: where, when and with which code a result was produced.

Every recorded result (a training run's results JSON, a benchmark, a chapter run) carries
`provenance(...)`: the device, the CPU and threads, torch and Python versions, the git commit and whether
lstm_lab/ had uncommitted changes, the command and the date.  Introduced in chapter 3.
"""
import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["git_commit", "commits_since", "cpu_name", "provenance", "utc_now"]


def git_commit(repo):
    """(HEAD commit, whether lstm_lab/ has uncommitted changes) of the repository at `repo`, or (None, None).

    Recorded results (lstm_lab/recorded/) are not code: a study writing its results there while it runs
    leaves the code it runs clean.
    A copy of a clean checkout sent to another machine (a remote GPU) names its commit in $LSTM_LAB_COMMIT:
    when set, it is used, with no uncommitted changes, since the copy's .git (if any) may be stale.  Chapter 3."""
    if os.environ.get("LSTM_LAB_COMMIT"):
        return os.environ["LSTM_LAB_COMMIT"], False
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--", "lstm_lab", ":!lstm_lab/recorded"], cwd=repo,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def commits_since(commit, paths, repo=None):
    """How many commits after `commit`, up to HEAD, changed any of `paths` (relative to the repository root), or
    None when that cannot be told: no git, `repo` not the root of a checkout (an installed copy), or `commit` not
    in its history.

    A recorded result names the commit that made it; a later commit that changed the code it measured makes it a
    measurement of older code.  repo: default, the checkout this package is in.  Chapters 3 and 7."""
    repo = Path(repo or Path(__file__).resolve().parent.parent).resolve()
    git = ["git", "-C", str(repo)]
    try:
        top = subprocess.run(git + ["rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        if Path(top.stdout.strip()).resolve() != repo:  # a copy inside some other repository
            return None
        subprocess.run(git + ["cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, check=True)
        count = subprocess.run(git + ["rev-list", "--count", f"{commit}..HEAD", "--", *paths], capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return int(count.stdout)


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, else platform.processor().  Chapter 3."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def provenance(argv, device, code=None):
    """Where, when and how a result was produced: device, versions, commit, command, date, CPU and threads.

    code: (commit, uncommitted changes) of the code that ran, as read when it was loaded (default: now).
    Chapters 3, 5, 7 and 9."""
    commit, dirty = code or git_commit(Path(__file__).resolve().parent.parent)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": f"{device} ({name})", "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "python_version": platform.python_version(), "commit": commit, "uncommitted_changes": dirty,
            "command": "python -m lstm_lab " + " ".join(argv),
            "date": utc_now()}


def utc_now():
    """The date and time now, in UTC, as ISO 8601 to the second: how every recorded result is dated.  Chapter 3."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
