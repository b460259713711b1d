"""Recorded results: the runs, benchmarks and studies the chapters show, with their provenance, and the tables
and summaries the chapters make of them.

Recorded results live inside the package, in `lstm_lab/recorded/`, and are installed with it (package data),
so a chapter finds them wherever it runs: in a checkout, or on Colab after `pip install lstm_lab @ git+...`.
Each file carries its provenance: device, versions, commit, command, date and wall time.

    load_recorded("bench-gpu.json")      # the dict, or None if no such file was recorded
    load_runs({"nn.LSTM": "ptb-zaremba-small-torch.json"})   # {label: dict} of those recorded
    recorded_names()                     # every recorded file, sorted
    describe_record(load_recorded("bench-gpu.json")["provenance"], "bench")   # where, when, from which commit,
                                         # and how many commits have changed the code it measured since

Introduced in chapter 3.
"""
import json
from importlib import resources
from pathlib import Path

import numpy as np

from lstm_lab.provenance import commits_since

__all__ = ["MEASURED_CODE", "recorded_names", "load_recorded", "later_commits", "describe_record",
           "load_results_folder", "load_recorded_folder", "load_runs", "load_seeds", "mean_and_spread", "seeds_row",
           "format_spread", "run_row", "comparison_rows", "describe_sessions"]

RECORDED = "recorded"  # the folder inside the package
# The package's files each kind of record measured (paths in the repository): a later commit that changes one of
# them makes a record of that kind a measurement of older code than this copy's.
MEASURED_CODE = {
    "bench": ("lstm_lab/cells.py", "lstm_lab/lstm.py", "lstm_lab/runtime.py", "lstm_lab/experiments/ladder.py",
              "lstm_lab/experiments/csrc", "lstm_lab/experiments/bench.py", "lstm_lab/experiments/timing.py"),
    "throughput": ("lstm_lab/cells.py", "lstm_lab/lstm.py", "lstm_lab/init.py", "lstm_lab/model.py",
                   "lstm_lab/train.py", "lstm_lab/lm_train.py", "lstm_lab/runtime.py",
                   "lstm_lab/experiments/throughput.py", "lstm_lab/experiments/timing.py"),
    "training": ("lstm_lab/cells.py", "lstm_lab/lstm.py", "lstm_lab/init.py", "lstm_lab/model.py", "lstm_lab/train.py",
                 "lstm_lab/lm_train.py", "lstm_lab/runtime.py", "lstm_lab/data"),
}


def recorded_names():
    """The names of every recorded result shipped with the package, sorted; a study's results are in a
    folder of their own and named with it ("depth-200/L1-H200-d0-seed0.json").  Chapter 3."""
    folder = resources.files("lstm_lab") / RECORDED
    names = []
    for entry in folder.iterdir():
        if entry.is_dir():
            names += [f"{entry.name}/{inner.name}" for inner in entry.iterdir() if inner.name.endswith(".json")]
        elif entry.name.endswith(".json"):
            names.append(entry.name)
    return sorted(names)


def load_recorded(name):
    """The recorded result `name` (e.g. "bench-cpu.json") as a dict, or None if it was never recorded.

    Read through importlib.resources, so it works from a checkout and from an installed package alike.
    Chapters 3, 6 and 7."""
    entry = resources.files("lstm_lab") / RECORDED / name
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


def later_commits(provenance, kind):
    """How many commits after the one that made a record changed the code a record of `kind` (a key of
    MEASURED_CODE) measured, or None when this copy's git history cannot tell (see
    `lstm_lab.provenance.commits_since`).  provenance: the record's, with its "commit".  Chapters 3, 6 and 7."""
    if not provenance.get("commit"):
        return None
    return commits_since(provenance["commit"], MEASURED_CODE[kind])


def describe_record(provenance, kind):
    """One line on where a recorded result comes from and whether the code it measured has changed since: its
    device, torch version, commit and date, and `later_commits`.  kind: a key of MEASURED_CODE.  Chapters 3, 6
    and 7."""
    line = (f"recorded on {provenance['device']} with torch {provenance['torch_version']}, from commit "
            f"{(provenance.get('commit') or 'unknown')[:7]} on {provenance['date'][:10]}")
    later = later_commits(provenance, kind)
    if later is None:
        return line + "; this copy of lstm_lab has no git history to say whether that code has changed since"
    if later == 0:
        return line + "; no later commit changed the code it measured"
    commits = f"{later} later commit{'s' if later > 1 else ''}"
    return line + f"; {commits} changed its files: it measured older code than this copy's"


def load_results_folder(folder):
    """{name: results} of every finished run (a results JSON with "complete": true) in `folder`, by file name
    without .json; {} if there is no such folder.  Chapter 3."""
    folder = Path(folder)
    runs = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}
    return {name: run for name, run in runs.items() if run.get("complete")}


def load_recorded_folder(folder):
    """`load_results_folder` of folder `folder` of the recorded results (lstm_lab/recorded/<folder>).
    Chapter 8."""
    return load_results_folder(resources.files("lstm_lab") / RECORDED / folder)


def load_runs(names):
    """{label: recorded results} for names {label: file name}; a file that was never recorded is left out
    and said so in one printed line (a chapter then shows what exists).  Chapter 6."""
    runs = {}
    for label, name in names.items():
        run = load_recorded(name)
        if run is None:
            print(f"{name} was not recorded in this copy of lstm_lab: nothing to show for {label}")
        else:
            runs[label] = run
    return runs


def load_seeds(folder, names):
    """The recorded results among `names` (e.g. one configuration's seeds) in folder `folder` of the recorded
    results, in the order given; the ones never recorded are left out.  Chapter 5."""
    runs = [load_recorded(f"{folder}/{name}") for name in names]
    return [run for run in runs if run is not None]


def mean_and_spread(values):
    """(mean, sample standard deviation) of a list of numbers; the deviation is None for fewer than two.
    Chapters 5, 8 and 9."""
    values = np.asarray(values, dtype=float)
    spread = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), spread


def seeds_row(label, runs):
    """One table row for the seeds of one configuration: how many (and how many are still training), and
    mean +- standard deviation of the validation perplexity after each epoch all of them reached and of the
    test perplexity.  Chapter 5."""
    epochs = min(len(run["valid_ppl"]) for run in runs)
    unfinished = sum(not run["complete"] for run in runs)
    row = {"configuration": label, "seeds": f"{len(runs)}" + (f" ({unfinished} unfinished)" if unfinished else "")}
    for epoch in range(epochs):
        row[f"valid, epoch {epoch + 1}"] = format_spread(*mean_and_spread([r["valid_ppl"][epoch] for r in runs]))
    tested = [run["test_ppl"] for run in runs if run.get("test_ppl")]
    if not tested:
        row["test"] = "not yet"
    else:  # "(2)": only two of the seeds were tested so far
        row["test"] = format_spread(*mean_and_spread(tested)) + (f" ({len(tested)})" if len(tested) < len(runs) else "")
    return row


def format_spread(mean, spread):
    """'112.3 ± 0.8', or '112.3' without a spread.  Chapter 3."""
    return f"{mean:.1f}" + (f" ± {spread:.1f}" if spread is not None else "")


def run_row(label, run):
    """One table row for a recorded training run: how far it got, its perplexities, speed and provenance.

    run: a results JSON written by `python -m lstm_lab train --results ...`.  Chapter 6."""
    minutes = [(r["train_seconds"] + r["valid_seconds"]) / 60 for r in run["history"]]
    commit = (run["commit"] or "?")[:7] + (" +changes" if run.get("uncommitted_changes") else "")
    return {"run": label, "epochs": f"{run['epochs']} / {run['planned_epochs']}",
            "valid ppl (last)": f"{run['valid_ppl'][-1]:.1f}" if run["valid_ppl"] else "-",
            "test ppl": f"{run['test_ppl']:.1f}" if run.get("test_ppl") else "not yet",
            "min / epoch": f"{sum(minutes) / len(minutes):.2g}" if minutes else "-",
            "words/s": f"{run['tokens_per_second']:,.0f}" if run.get("tokens_per_second") else "-",
            "device": run["device"], "threads": run["threads"], "torch": run["torch_version"], "commit": commit,
            "date": run["date"][:16]}


def comparison_rows(recorded, published):
    """Rows comparing recorded runs with published numbers, published first.

    recorded: {label: results JSON}; published: [{"model", "valid", "test", "note"}].  A run's valid and test
    perplexities are those of the model after its last epoch, the test text read as one stream (as the
    paper); an unfinished run shows its last per-epoch validation perplexity instead.  Chapter 6."""
    rows = [{"model": p["model"], "valid ppl": f"{p['valid']:.1f}", "test ppl": f"{p['test']:.1f}",
             "note": p["note"]} for p in published]
    for label, run in recorded.items():
        final = run.get("final_valid_ppl")
        if run.get("best_epoch_test_ppl"):
            note = (f"after epoch {run['epochs']}, one stream; the best validation epoch ({run['best_epoch']}) "
                    f"tests at {run['best_epoch_test_ppl']:.1f}")
        elif final:
            note = "after the last epoch, one stream"
        else:
            note = f"unfinished: epoch {run['epochs']} of {run['planned_epochs']}, validation with 20 streams"
        valid = final if final else (run["valid_ppl"][-1] if run["valid_ppl"] else None)
        rows.append({"model": label, "valid ppl": f"{valid:.1f}" if valid else "-",
                     "test ppl": f"{run['test_ppl']:.1f}" if run.get("test_ppl") else "not yet", "note": note})
    return rows


def describe_sessions(label, run):
    """Lines saying whether a recorded run is complete and which commands trained, resumed and tested it: a
    language-model record (`planned_epochs`) or a run folder's results (`config.epochs`).  Chapters 6, 7 and 8."""
    planned = run.get("planned_epochs") or run["config"]["epochs"]
    status = ("complete" if run["complete"] else
              f"not finished: stopped after epoch {run.get('epochs') or len(run['history'])} of {planned}"
              + (f" ({run['stopped']})" if run.get("stopped") else ""))
    sessions = run.get("sessions") or [run]
    lines = [f"{label}: {status}.  trained with: {sessions[0]['command']}"]
    for later in sessions[1:]:
        what = ("re-evaluated" if later.get("start_epoch", 0) > planned
                else f"resumed at epoch {later.get('start_epoch', '?')}")
        lines.append(f"    then {what} on {later['date'][:16]} with: {later['command']}")
    if run.get("test_eval"):
        lines.append(f"    test perplexity measured on the {run['test_eval']}")
    if run.get("commit_note"):
        lines.append(f"    provenance: {run['commit_note']}")
    return lines
