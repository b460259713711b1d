"""Run chapter 8's optimizer and initialisation studies (see lstm_lab.experiments.poems_study for the rules).

    python tools/poems_study.py                       # every run, two side by side, on the CPU
    python tools/poems_study.py --workers 1
    python tools/poems_study.py --dry-run             # print the runs that could start now

Each run is `python -m lstm_lab poems train` with its folder in RUNS/<name> and its results JSON in
lstm_lab/recorded/poems/<name>.json.  The learning-rate searches pick their next rate from the results so far,
so the tool keeps asking which runs are ready until none is.  Started again, it skips the runs already
recorded and resumes the others from their last checkpoint: kill it at any time.
"""
import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from study_runner import REPO, make_folders, run_jobs  # noqa: E402
from lstm_lab.experiments.poems_study import POEMS_RECORDED, STUDY_OPTIONS, study_jobs, study_results  # noqa: E402
from lstm_lab.experiments.records import load_results_folder  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="runs side by side")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / POEMS_RECORDED, help="run folders go here")
    parser.add_argument("--record", type=Path, default=REPO / "lstm_lab" / "recorded" / POEMS_RECORDED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    args.runs, args.record = make_folders(args.runs, args.record)

    def ready():
        jobs = []
        for name, options in study_jobs(study_results(load_results_folder(args.record))):
            out = args.runs / name
            command = [sys.executable, "-m", "lstm_lab", "poems", "train", *STUDY_OPTIONS, *options,
                       "--device", args.device, "--threads", "1", "--out", str(out),
                       "--results", str(args.record / f"{name}.json")]
            jobs.append((name, command + ["--resume"] * (out / "checkpoint.pt").is_file()))
        return jobs

    return run_jobs(ready, args.workers, args.runs, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
