"""The start of every chapter: the package it was written for, seed, device, and one line on what to expect.

    device = start_chapter("03_step_by_step", seed=0, source=LSTM_LAB)

prints what `lstm_lab.runtime.setup` prints (torch's version, the device, the seed), then how long the chapter
took when it was last run top to bottom on a CPU and on a GPU, from the recorded runs of `tools/run_chapters.py`
(`lstm_lab/recorded/chapters-cpu.json` and `chapters-gpu.json`, with their date and commit, since the code may
have changed since), and, on a Colab runtime without a GPU, how to get one.  Introduced in chapter 1.

The first cell of every page is `SETUP_CELL` with the page's name and a commit filled in (`setup_cell`; the
commit is written by tools/pin_book.py, tests/test_colab_setup.py checks it).  On Colab that cell installs lstm_lab
from the repository at that commit, the last one that changed the package, so a page opened from an older book,
or a copy saved to Drive months ago, runs against the package it was written for, not today's; an install that
fails ends in one line with git's reason.  `start_chapter` then refuses to run a page against lstm_lab installed
from another commit (`installed_source`).
"""
import json
import sys
from importlib import metadata

from lstm_lab.experiments.records import load_recorded
from lstm_lab.runtime import setup

__all__ = ["RECORDS", "STACKS", "BUDGETS", "REPOSITORY", "SETUP_CELL", "setup_cell", "read_installed_source",
           "installed_source", "chapter_timing", "over_budget", "expectation", "start_chapter"]

RECORDS = {"CPU": "chapters-cpu.json", "GPU": "chapters-gpu.json"}  # what run_chapters.py recorded on each
# Every page run on other versions than the book's (run_chapters.py): Colab's packages, each page installing
# lstm_lab itself (--as-colab), and the lowest versions the chapters support (requirements-floor-chapters.txt).
STACKS = {"Colab's stack": "chapters-colab-stack.json", "the floors": "chapters-floor.json"}
# The most a page may take, run top to bottom: a few minutes on a 2-core CPU (the book build, one thread), about a
# minute on a GPU.  Longer measurements belong in recorded runs that a chapter reads.
BUDGETS = {"CPU": 300, "GPU": 60}

REPOSITORY = "https://github.com/lstm-lab/lstm-lab"  # also _config.yml's repository url

# <commit> and <chapter> are filled in by setup_cell.  When pip fails, the cell ends in one line with git's or
# pip's own reason: no network ("Could not resolve host"), no such repository, a commit the repository does not
# have ("not our ref"), a dependency that cannot be installed.
SETUP_CELL = f'''\
# Setup.  On Colab: install the lstm_lab this page was written for (the commit is written by tools/pin_book.py).
# Then seed, pick the device and say how long this page takes.
import subprocess, sys
LSTM_LAB = "lstm_lab @ git+{REPOSITORY}@<commit>"
if "google.colab" in sys.modules:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", LSTM_LAB], capture_output=True, text=True)
    if pip.returncode != 0:
        reasons = [line.strip() for line in pip.stderr.splitlines() if line.strip().startswith(("fatal:", "ERROR:"))]
        hint = " (is this runtime online?)" if "resolve host" in pip.stderr else ""
        raise SystemExit(f"Could not install {{LSTM_LAB}}: {{reasons[0] if reasons else pip.stderr[-300:]}}{{hint}}")
from lstm_lab.book.chapter import start_chapter
device = start_chapter("<chapter>", seed=0, source=LSTM_LAB)'''


def setup_cell(chapter, commit):
    """The source of the first cell of page `chapter` ("01_lstm_cell", "appendix/assignment"), installing lstm_lab
    at `commit` (40 hex digits) on Colab.  Chapter 1."""
    return SETUP_CELL.replace("<commit>", commit).replace("<chapter>", chapter)


def read_installed_source():
    """"lstm_lab @ git+URL@COMMIT" when the lstm_lab pip finds was installed from a git repository (pip keeps the
    URL and commit in the distribution's direct_url.json), else None: a checkout, an editable install, a wheel.
    Chapter 1."""
    try:
        direct = json.loads(metadata.distribution("lstm_lab").read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, json.JSONDecodeError):
        return None
    if not direct or direct.get("vcs_info", {}).get("vcs") != "git":
        return None
    return f"lstm_lab @ git+{direct['url']}@{direct['vcs_info']['commit_id']}"


INSTALLED_SOURCE = read_installed_source()  # read once, when this module is imported: the code this kernel runs


def installed_source():
    """Where the lstm_lab this kernel imported was installed from, "lstm_lab @ git+URL@COMMIT", or None when it
    was not installed from git.  Chapter 1."""
    return INSTALLED_SOURCE


def chapter_timing(chapter, kind):
    """{"seconds", "device", "date", "commit"} of the last recorded top-to-bottom run of `chapter` (a notebook's
    name, "03_step_by_step", or its path outside chapters/ without .ipynb, "appendix/assignment") on `kind`
    ("CPU" or "GPU"), or None if it was not recorded or did not end.  Chapter 1."""
    record = load_recorded(RECORDS[kind]) or {"notebooks": []}
    notebook = f"{chapter}.ipynb" if "/" in chapter else f"chapters/{chapter}.ipynb"  # "appendix/assignment" too
    for row in record["notebooks"]:
        if row["notebook"] == notebook and row["status"] == "ok":
            cores = f", {record['cpu_count']} cores" if kind == "CPU" and record.get("cpu_count") else ""
            return {"seconds": row["seconds"], "device": f"{row['device']}{cores}", "date": row["date"][:10],
                    "commit": row["commit"][:7]}
    return None


def over_budget(kind, record=None):
    """[(notebook, seconds)] of the recorded run on `kind` ("CPU" or "GPU") whose pages took longer than
    BUDGETS[kind] or did not end ("status" not "ok": seconds None).  record: a run_chapters.py record (default: the
    package's).  Chapter 1."""
    record = record if record is not None else load_recorded(RECORDS[kind]) or {"notebooks": []}
    return [(row["notebook"], row["seconds"] if row["status"] == "ok" else None) for row in record["notebooks"]
            if row["status"] != "ok" or row["seconds"] > BUDGETS[kind]]


def duration(seconds):
    """"45 s", "3.5 min": a wall time as a reader takes it in."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def expectation(chapter, device, colab=False):
    """The line `start_chapter` prints about time: the recorded run on a CPU and on a GPU (the older of the two
    marked "with older code": the chapter may have changed between them), and, on Colab without a GPU, how to
    get one.  device: the torch.device the chapter will use.  Chapter 1."""
    timings = {kind: chapter_timing(chapter, kind) for kind in RECORDS}
    newest = max((t["date"] for t in timings.values() if t), default=None)
    parts = []
    for kind, timing in timings.items():
        if timing is None:
            parts.append(f"not yet recorded on a {kind}")
            continue
        older = " with older code" if timing["date"] < newest else ""  # the chapter may have changed since
        parts.append(f"{duration(timing['seconds'])} on a {kind} ({timing['device']}; run {timing['date']}{older}, "
                     f"commit {timing['commit']})")
    line = f"This chapter, run top to bottom: {parts[0]}; {parts[1]}."
    if colab and device.type == "cpu":
        line += (" This Colab runtime has no GPU: for one, choose Runtime > Change runtime type > a GPU, then "
                 "run all cells again.")
    return line


def start_chapter(chapter, seed=0, prefer=None, threads=1, source=None):
    """Seed everything, pick the device and, on a CPU, the number of threads (`lstm_lab.runtime.setup`, which
    prints them), then print what to expect (`expectation`).  Returns the device.  Called from the first, hidden
    cell of every chapter.  Chapters 1, 2, 3, 4, 5, 6, 7, 8 and 9.

    source: the pip requirement the page installs on Colab ("lstm_lab @ git+URL@COMMIT").  When this kernel's
    lstm_lab was installed from git at another commit (pip keeps an installed version of the same number; or the
    kernel imported it before a new install), RuntimeError says how to get the page's own."""
    wanted, installed = (s.rpartition("@")[2] if s else None for s in (source, installed_source()))
    if wanted and installed and installed != wanted:
        raise RuntimeError(f"this page was written for lstm_lab at commit {wanted[:7]}, and this kernel runs it from "
                           f"commit {installed[:7]}: run !pip uninstall -y lstm_lab, restart the kernel (Colab: "
                           "Runtime > Restart session) and run all cells again")
    device = setup(seed, prefer, threads)
    print(expectation(chapter, device, colab="google.colab" in sys.modules))
    return device
