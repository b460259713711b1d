"""Chapter 8's two studies on the five-character quatrains: optimizers with tuned learning rates, and
initialisation schemes.

Every run is `python -m lstm_lab poems train` with STUDY_OPTIONS (the quatrains only, 1 x 256, at most
STUDY_EPOCHS epochs, stopping after 2 without a better validation perplexity) plus its own options; its
results JSON is lstm_lab/recorded/poems/<name>.json.  That folder may hold other poem runs too (a model of the
whole corpus, say): `study_results` keeps only the files the studies name, and refuses one of them that was
trained with other options.

The learning-rate rule, the same for every optimizer:
  1. start from the learning rate seed 002 used for it (SEED_002_LR) and try it times 10^(-1/2), 1, 10^(1/2);
  2. while the best validation perplexity sits at an end of the values tried, try one more step of 10^(1/2)
     beyond it (at most MAX_STEPS steps from the start in each direction);
  3. run the best learning rate with the other seeds.
The initialisation study trains Adam at seed 002's 1e-3 from each of `lstm_lab.init.INIT_SCHEMES` (its
"default" runs are the Adam runs at 1e-3 of the search).

`study_jobs(results)` says which runs are ready, given the results so far; `tools/poems_study.py` runs them.
Introduced in chapter 8.
"""
import math

from lstm_lab.experiments.records import format_spread, load_recorded_folder, mean_and_spread
from lstm_lab.init import INIT_SCHEMES
from lstm_lab.poems_train import OPTIMIZERS

__all__ = ["POEMS_RECORDED", "STUDY_CONFIG", "STUDY_OPTIONS", "SEED_002_REPORT", "MAX_STEPS", "learning_rate",
           "run_name", "init_name", "study_configs", "study_results", "load_study", "score", "search_steps", "study_jobs", "optimizer_table", "search_points", "chosen_runs", "init_runs"]

POEMS_RECORDED = "poems"  # the folder in lstm_lab/recorded/ that holds the studies' results
STUDY_EPOCHS = 10
STUDY_CONFIG = {"forms": "5x4", "min_count": 2, "embed_size": 128, "hidden_size": 256, "num_layers": 1,
                "dropout": 0.2, "batch_size": 64, "epochs": STUDY_EPOCHS, "patience": 2}  # every run's PoemsConfig
STUDY_OPTIONS = tuple(part for name, value in STUDY_CONFIG.items()
                      for part in (f"--{name.replace('_', '-')}", str(value)))  # the same, as `poems train` options
SEED_002_LR = {"sgd": 0.1, "momentum": 0.1, "adagrad": 0.01, "adam": 1e-3, "adamw": 1e-3}  # seed 002's table
SEED_002_REPORT = {  # seed 002's table: (learning rate, reported validation perplexity, epoch it stopped at)
    "sgd": (0.1, 35.9, ">200"), "momentum": (0.1, 27.5, "77"), "adagrad": (0.01, 23.5, "20"),
    "adam": (1e-3, 22.7, "10")}
STUDY_SEEDS = (0, 1)
MAX_STEPS = 4  # the search goes at most 100x above or below seed 002's rate


def learning_rate(optimizer, step):
    """Seed 002's learning rate for `optimizer` times 10^(step/2), rounded to 3 significant digits.  Chapter 8."""
    return float(f"{SEED_002_LR[optimizer] * 10 ** (step / 2):.3g}")


def run_name(optimizer, step, seed):
    """'adam-lr0.00316-seed0'.  Chapter 8."""
    return f"{optimizer}-lr{learning_rate(optimizer, step):g}-seed{seed}"


def init_name(scheme, seed):
    """'init-zeros-seed0'; the default scheme's run is the optimizer study's Adam run at 1e-3.  Chapter 8."""
    return run_name("adam", 0, seed) if scheme == "default" else f"init-{scheme}-seed{seed}"


def study_configs():
    """{run name: the PoemsConfig fields it is trained with} for every run the two studies can ask for.
    Chapter 8."""
    configs = {}
    for optimizer in OPTIMIZERS:
        for step in range(-MAX_STEPS, MAX_STEPS + 1):
            for seed in STUDY_SEEDS:
                configs[run_name(optimizer, step, seed)] = {**STUDY_CONFIG, "optimizer": optimizer, "seed": seed,
                                                            "lr": learning_rate(optimizer, step), "init": "default"}
    for scheme in INIT_SCHEMES:
        for seed in STUDY_SEEDS:
            configs[init_name(scheme, seed)] = {**STUDY_CONFIG, "optimizer": "adam", "seed": seed,
                                                "lr": learning_rate("adam", 0), "init": scheme}
    return configs


def study_results(results):
    """The studies' runs among `results` ({file name: results JSON}, as `load_results_folder` returns): the
    files the studies name, each checked against the options it must have been trained with; other runs in
    the folder are left out.  ValueError (one line) for a study file trained with other options.  Chapter 8."""
    expected, chosen = study_configs(), {}
    for name, result in results.items():
        if name not in expected:
            continue  # not a run of the studies (e.g. a model of the whole corpus)
        differs = {k: (result.get("config", {}).get(k), v) for k, v in expected[name].items()
                   if result.get("config", {}).get(k) != v}
        if differs:
            raise ValueError(f"{name}.json is named as a run of the poem studies but was trained with other options "
                             f"(recorded, expected): {differs}")
        chosen[name] = result
    return chosen


def load_study(folder=POEMS_RECORDED):
    """`study_results` of the recorded folder `folder` (lstm_lab/recorded/poems).  Chapter 8."""
    return study_results(load_recorded_folder(folder))


def score(result):
    """The best validation perplexity of a finished run; infinity for a run that diverged.  Chapters 6, 8 and 9."""
    ppl = result.get("best_valid_ppl")
    return ppl if ppl is not None and math.isfinite(ppl) else math.inf


def search_steps(optimizer, results):
    """(steps tried so far, whether the search still needs one of them run, the best step or None).

    results: {run name: results JSON} of the finished runs.  Chapter 8."""
    steps = [-1, 0, 1]
    while True:
        missing = [s for s in steps if run_name(optimizer, s, 0) not in results]
        if missing:
            return steps, missing, None
        scores = {s: score(results[run_name(optimizer, s, 0)]) for s in steps}
        best = min(steps, key=lambda s: (scores[s], abs(s)))
        if best == steps[0] and best > -MAX_STEPS:
            steps.insert(0, best - 1)
        elif best == steps[-1] and best < MAX_STEPS:
            steps.append(best + 1)
        else:
            return steps, [], best


def study_jobs(results):
    """[(name, extra options)] of every run that can start now: the learning-rate searches' next runs, the
    other seeds at each settled best rate, then the initialisation runs.  Chapter 8."""
    jobs = []
    for optimizer in OPTIMIZERS:
        _, missing, best = search_steps(optimizer, results)
        if missing:
            jobs += [(run_name(optimizer, s, 0), optimizer_options(optimizer, s, 0)) for s in missing]
        else:
            jobs += [(run_name(optimizer, best, seed), optimizer_options(optimizer, best, seed))
                     for seed in STUDY_SEEDS[1:] if run_name(optimizer, best, seed) not in results]
    for seed in STUDY_SEEDS:
        jobs += [(init_name(scheme, seed), optimizer_options("adam", 0, seed) + ("--init", scheme))
                 for scheme in INIT_SCHEMES if init_name(scheme, seed) not in results]
    return list(dict(jobs).items())  # each run once (the default init is an Adam run of the search)


def optimizer_options(optimizer, step, seed):
    """The options of one run of the optimizer study."""
    return ("--optimizer", optimizer, "--lr", repr(learning_rate(optimizer, step)), "--seed", str(seed))


def optimizer_table(results):
    """Rows for chapter 8: per optimizer, the rates tried (best first), the chosen one, and the best validation
    and test perplexity per character over its seeds (mean ± sd), beside seed 002's reported perplexity."""
    rows = []
    for optimizer in OPTIMIZERS:
        steps, missing, best = search_steps(optimizer, results)
        tried = {s: score(results[run_name(optimizer, s, 0)]) for s in steps if run_name(optimizer, s, 0) in results}
        row = {"optimizer": optimizer, "seed 002's lr": f"{SEED_002_LR[optimizer]:g}",
               "lr tried: valid ppl": ", ".join(f"{learning_rate(optimizer, s):g}: {tried[s]:.1f}"
                                                for s in sorted(tried))}
        if best is None:
            rows.append({**row, "chosen lr": "searching"})
            continue
        seeds = [results[name] for seed in STUDY_SEEDS if (name := run_name(optimizer, best, seed)) in results]
        row["chosen lr"] = f"{learning_rate(optimizer, best):g}" + (" (edge)" if abs(best) == MAX_STEPS else "")
        row["seeds"] = len(seeds)
        row["valid ppl"] = format_spread(*mean_and_spread([score(r) for r in seeds]))
        row["test ppl"] = format_spread(*mean_and_spread([r["test_ppl"] for r in seeds]))
        row["best epoch"] = ", ".join(str(r["best_epoch"]) for r in seeds)
        rows.append(row)
    return rows


def search_points(results):
    """{optimizer: [(learning rate, best validation perplexity)]} of every seed-0 run of the searches, in
    order of rate; a diverged run is left out.  Chapter 8."""
    points = {}
    for optimizer in OPTIMIZERS:
        steps = search_steps(optimizer, results)[0]
        points[optimizer] = [(learning_rate(optimizer, s), score(results[run_name(optimizer, s, 0)]))
                             for s in steps if run_name(optimizer, s, 0) in results
                             and math.isfinite(score(results[run_name(optimizer, s, 0)]))]
    return points


def chosen_runs(results, optimizer, step=None):
    """The seeds' results of `optimizer` at search step `step` (None: the step the search chose; 0: seed 002's
    rate), as curves for `lstm_lab.book.plots.plot_seed_curves`.  Chapter 8."""
    if step is None:
        step = search_steps(optimizer, results)[2]
    return [as_curve(results[name]) for seed in STUDY_SEEDS if (name := run_name(optimizer, step, seed)) in results]


def init_runs(results, scheme):
    """The seeds' results of one initialisation scheme, as curves for `lstm_lab.book.plots.plot_seed_curves`.
    Chapter 8."""
    return [as_curve(results[name]) for seed in STUDY_SEEDS if (name := init_name(scheme, seed)) in results]


def as_curve(result):
    """A poems results JSON with the lists plot_seed_curves reads: valid_ppl and unit_spread per epoch."""
    return {**result, "valid_ppl": [h["valid_ppl"] for h in result["history"]],
            "unit_spread": [h["unit_spread"] for h in result["history"]]}
