"""Run chapter 9's date translators: no attention and each of Luong's three scores, for every seed.

    python tools/dates_study.py                       # all of it, one run at a time, on the CPU
    python tools/dates_study.py --workers 2           # two runs side by side (one thread each)
    python tools/dates_study.py --seeds 0 --dry-run   # print the commands only

Each run is one `python -m lstm_lab dates train --score SCORE --seed SEED ...`; its run folder is
RUNS/<score>-seed<N>, its log RUNS/<score>-seed<N>.log, and its results JSON goes to
lstm_lab/recorded/dates/<score>-seed<N>.json.  The runs go seed by seed, every score for a seed before the
next seed.  Started again, it skips the runs whose results are complete and resumes the others from their last
checkpoint: kill it at any time.
"""
import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from study_runner import REPO, is_complete, make_folders, run_jobs  # noqa: E402
from lstm_lab.seq2seq import SCORES  # noqa: E402

DATES_SCORES = ("none", *SCORES)  # no attention first, then Luong's dot, general and concat
DATES_SEEDS = (0, 1)
DATES_RECORDED = "dates"  # the folder name under runs/ and lstm_lab/recorded/


def train_command(score, seed, runs, record, device):
    """The `dates train` command of one run (with --resume if an earlier start left a checkpoint)."""
    name = f"{score}-seed{seed}"
    command = [sys.executable, "-m", "lstm_lab", "dates", "train", "--score", score, "--seed", str(seed),
               "--out", str(runs / name), "--results", str(record / f"{name}.json"),
               "--device", device, "--threads", "1"]
    return command + ["--resume"] * (runs / name / "checkpoint.pt").is_file()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DATES_SEEDS))
    parser.add_argument("--workers", type=int, default=1, help="runs side by side")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / DATES_RECORDED, help="run folders go here")
    parser.add_argument("--record", type=Path, default=REPO / "lstm_lab" / "recorded" / DATES_RECORDED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    args.runs, args.record = make_folders(args.runs, args.record)

    def ready():
        return [(f"{score}-seed{seed}", train_command(score, seed, args.runs, args.record, args.device))
                for seed in args.seeds for score in DATES_SCORES
                if not is_complete(args.record / f"{score}-seed{seed}.json")]

    return run_jobs(ready, args.workers, args.runs, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
