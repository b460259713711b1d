"""Run chapter 5's depth study: every configuration of `lstm_lab.experiments.depth.DEPTH_STUDY` for every seed.

    python tools/depth_study.py                       # all of it, one run at a time, on the CPU
    python tools/depth_study.py --workers 2           # two runs side by side (one thread each)
    python tools/depth_study.py --seeds 0 --dry-run   # print the commands only

Each run is one `python -m lstm_lab train --preset depth-200 ...` with the configuration's overrides; its run
folder is RUNS/<name>-seed<N> and its results JSON goes to lstm_lab/recorded/depth-200/<name>-seed<N>.json,
rewritten after every epoch.  The runs go seed by seed, the core configurations (every depth at equal
width, at equal parameters and with dropout) for every seed before the tied-layer and learning-rate runs, so a
study stopped early has the seeds the comparison of depths needs.  Started again, it skips the runs whose results are complete
and resumes the others from their last checkpoint: kill it at any time.
"""
import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from study_runner import REPO, is_complete, make_folders, run_jobs  # noqa: E402
from lstm_lab.experiments.depth import DEPTH_PRESET, DEPTH_RECORDED, DEPTH_SEEDS, DEPTH_STUDY, result_name  # noqa: E402


CORE_SIZINGS = ("equal width", "equal parameters", "dropout")  # every seed of these first, then the others


def train_command(run, seed, runs, record, device, rnn):
    """The `train` command of one run (with --resume if an earlier start left its folder)."""
    out = runs / f"{run.name}-seed{seed}"
    command = [sys.executable, "-m", "lstm_lab", "train", "--preset", DEPTH_PRESET, "--rnn", rnn,
               *run.overrides(),  # after --rnn: a tied run's own --rnn lab wins
               "--seed", str(seed), "--device", device, "--threads", "1", "--no-progress",
               "--out", str(out), "--results", str(record / result_name(run, seed))]
    if (out / "train.lock").exists():
        command.append("--resume")
    return command


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEPTH_SEEDS))
    parser.add_argument("--workers", type=int, default=1, help="runs side by side")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / DEPTH_RECORDED, help="run folders go here")
    parser.add_argument("--record", type=Path, default=REPO / "lstm_lab" / "recorded" / DEPTH_RECORDED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rnn", default="torch", choices=["torch", "lab"])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    args.runs, args.record = make_folders(args.runs, args.record)

    def ready():
        order = [(run, seed) for core in (True, False) for seed in args.seeds for run in DEPTH_STUDY
                 if (run.sizing in CORE_SIZINGS) == core]
        return [(f"{run.name}-seed{seed}", train_command(run, seed, args.runs, args.record, args.device, args.rnn))
                for run, seed in order if not is_complete(args.record / result_name(run, seed))]

    return run_jobs(ready, args.workers, args.runs, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
