"""The start of every chapter: seed, device, and one line on what to expect on this runtime.

    device = start_chapter("03_step_by_step", seed=0)

prints what `lstm_lab.runtime.setup` prints (torch's version, the device, the seed), then how long the chapter
took when it was last run top to bottom on a CPU and on a GPU, from the recorded runs of `tools/run_chapters.py`
(`lstm_lab/recorded/chapters-cpu.json` and `chapters-gpu.json`, with their date and commit, since the code may
have changed since), and, on a Colab runtime without a GPU, how to get one.  Introduced in chapter 1.
"""
import sys

from lstm_lab.experiments.records import load_recorded
from lstm_lab.runtime import setup

__all__ = ["RECORDS", "BUDGETS", "chapter_timing", "over_budget", "expectation", "start_chapter"]

RECORDS = {"CPU": "chapters-cpu.json", "GPU": "chapters-gpu.json"}  # what run_chapters.py recorded on each
# The most a page may take, run top to bottom: a few minutes on a 2-core CPU (the book build, one thread), about a
# minute on a GPU.  Longer measurements belong in recorded runs that a chapter reads.
BUDGETS = {"CPU": 300, "GPU": 60}


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


def start_chapter(chapter, seed=0, prefer=None, threads=1):
    """Seed everything, pick the device and, on a CPU, the number of threads (`lstm_lab.runtime.setup`, which
    prints them), then print what to expect (`expectation`).  Returns the device.  Called from the first, hidden
    cell of every chapter.  Chapters 1, 2, 3, 4, 5, 6, 7, 8 and 9."""
    device = setup(seed, prefer, threads)
    print(expectation(chapter, device, colab="google.colab" in sys.modules))
    return device
