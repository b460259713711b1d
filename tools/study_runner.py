"""Run a study's training commands, a few side by side, each logging to its own file: shared by
tools/depth_study.py, tools/poems_study.py and tools/dates_study.py.

    run_jobs(ready, workers=2, logs=Path("runs/poems"))

ready() returns [(name, command)] of the runs that may start now; it is asked again whenever a run ends, so a
study can decide its next runs from the results of the last ones.  A run that exits with an error is not
started again by this call.  Returns the number of runs that failed.
"""
import json
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def is_complete(path):
    """Whether the results JSON at `path` exists and says the run finished (tested)."""
    try:
        return json.loads(path.read_text())["complete"]
    except (OSError, ValueError, KeyError):
        return False


def make_folders(*folders):
    """Each folder as an absolute path, created if missing: the runs start in REPO, wherever the tool started."""
    folders = [Path(folder).absolute() for folder in folders]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def stamp(*words):
    print(time.strftime("%H:%M:%S"), *words, flush=True)


def run_jobs(ready, workers, logs, dry_run=False):
    if dry_run:
        for name, command in ready():
            print(name + ":", " ".join(map(str, command)))
        return 0
    running, ended, failed = {}, set(), 0
    while True:
        for name, command in ready():
            if len(running) >= workers:
                break
            if name in running or name in ended:
                continue
            stamp("start", name + ":", " ".join(map(str, command[1:])))
            with open(logs / f"{name}.log", "a") as log:
                running[name] = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        if not running:
            return failed
        time.sleep(2)
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                ended.add(name)
                failed += process.returncode != 0
                stamp(f"{name}: exit {process.returncode}")
