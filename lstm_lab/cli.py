"""The command line: `python -m lstm_lab train | evaluate | generate | bench`.

    python -m lstm_lab train --preset zaremba-small --rnn lab --out runs/small-lab [--resume]
    python -m lstm_lab evaluate --out runs/small-lab [--split test --batch-size 1]
    python -m lstm_lab generate --out runs/small-lab --prompt "the market" --steps 30 --temperature 0.8 --top-k 40
    python -m lstm_lab bench ...   (forwarded to lstm_lab.bench.main)

Introduced in chapter 6.
"""
import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from lstm_lab.config import PRESETS, RNN_CHOICES


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text):
    """argparse type: a float > 0."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_common(parser):
    """Options every subcommand that runs a model takes."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default 1, so runs side by side do not fight)")
    parser.add_argument("--data-dir", default=None, help="folder with the corpora (default: $LSTM_LAB_DATA, data/)")


def add_weights(parser):
    """--weights: which of a run's saved models to use."""
    parser.add_argument("--weights", choices=["last", "best"], default="last",
                        help="last: the latest epoch (checkpoint.pt; what the test_ppl in results is of); "
                             "best: the best validation epoch (best.pt)")


def build_parser():
    """The argparse parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m lstm_lab", description="LSTM Lab language models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,generate,bench}")
    train = sub.add_parser("train", help="train a preset, checkpointing every epoch")
    train.add_argument("--preset", required=True, choices=list(PRESETS), help="named configuration")
    train.add_argument("--rnn", choices=RNN_CHOICES, default="lab", help="lab: lstm_lab.LSTM, torch: nn.LSTM")
    train.add_argument("--out", required=True, help="run folder for checkpoint.pt, best.pt, config.json")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--results", default=None, help="also write the results JSON here (e.g. results/x.json)")
    train.add_argument("--epochs", type=positive_int, default=None, help="override the preset's epochs")
    train.add_argument("--max-batches", type=non_negative_int, default=None, help="windows per epoch (0 = all)")
    train.add_argument("--tie-weights", action="store_true", help="share the embedding and decoder matrices")
    train.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common(train)
    evaluate = sub.add_parser("evaluate", help="perplexity of a trained run on a split")
    evaluate.add_argument("--out", required=True, help="run folder written by train")
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test")
    evaluate.add_argument("--batch-size", type=positive_int, default=1, help="streams (1 = whole text as context)")
    add_weights(evaluate)
    add_common(evaluate)
    generate = sub.add_parser("generate", help="sample text from a trained run")
    generate.add_argument("--out", required=True, help="run folder written by train")
    generate.add_argument("--prompt", default="<eos>", help="space-separated start tokens (default: <eos>)")
    generate.add_argument("--steps", type=positive_int, default=40)
    generate.add_argument("--temperature", type=positive_float, default=1.0)
    generate.add_argument("--top-k", type=positive_int, default=None)
    generate.add_argument("--seed", type=int, default=0)
    add_weights(generate)
    add_common(generate)
    sub.add_parser("bench", help="speed benchmarks (arguments go to lstm_lab.bench)", add_help=False)
    return parser


def main(argv=None):
    """Entry point of `python -m lstm_lab`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from lstm_lab import bench  # imported only when asked for
        return bench.main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    handler = {"train": train_command, "evaluate": evaluate_command, "generate": generate_command}
    return handler[args.command](args, argv) or 0



def git_commit(repo):
    """(HEAD commit, whether lstm_lab/ has uncommitted changes) of the repository at `repo`, or (None, None).

    A copy of a clean checkout sent to another machine (a remote GPU) names its commit in $LSTM_LAB_COMMIT:
    when set, it is used, with no uncommitted changes, since the copy's .git (if any) may be stale."""
    import os
    import subprocess
    if os.environ.get("LSTM_LAB_COMMIT"):
        return os.environ["LSTM_LAB_COMMIT"], False
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--", "lstm_lab"], cwd=repo, capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def provenance(argv, device, code=None):
    """Where, when and how a result was produced: device, versions, commit, command, date, CPU and threads.

    code: (commit, uncommitted changes) of the code that ran, as read when it was loaded (default: now)."""
    import datetime
    import os
    import platform
    import torch
    commit, dirty = code or git_commit(Path(__file__).resolve().parent.parent)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": f"{device} ({name})", "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "python_version": platform.python_version(), "commit": commit, "uncommitted_changes": dirty,
            "command": "python -m lstm_lab " + " ".join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def results_record(args, model_config, train_config, run_state, parameters):
    """The results JSON of a run so far: configs, per-epoch numbers and totals."""
    history = run_state["history"]
    train_tokens = sum(r["train_tokens"] for r in history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return {"preset": args.preset, "rnn": model_config.rnn, "corpus": train_config.corpus, "complete": False,
            "epochs": len(history), "planned_epochs": train_config.epochs, "parameters": parameters,
            "valid_ppl": [r["valid_ppl"] for r in history], "train_ppl": [r["train_ppl"] for r in history],
            "lr": [r["lr"] for r in history], "test_ppl": None,
            "wall_seconds": sum(r["train_seconds"] + r["valid_seconds"] for r in history),
            "tokens_per_second": train_tokens / train_seconds if train_seconds else None,
            "history": history, "model_config": asdict(model_config), "train_config": asdict(train_config)}


class RunRecorder:
    """Writes a run's checkpoint, best model and results JSON after every epoch, and the test result at the end.

    The results JSON carries the provenance of the latest session on top and a list of every session (a run
    resumed across machines or days keeps the command, commit and date of each part)."""

    def __init__(self, args, argv, device, model_config, train_config, parameters, start_epoch=1):
        self.args, self.argv, self.device = args, argv, device
        self.model_config, self.train_config, self.parameters = model_config, train_config, parameters
        self.out = Path(args.out)
        self.paths = [self.out / "results.json"] + ([Path(args.results)] if args.results else [])
        previous = json.loads(self.paths[0].read_text()) if args.resume and self.paths[0].exists() else {}
        self.sessions = previous.get("sessions", [])
        start = provenance(argv, device)
        self.started, self.code = start["date"], (start["commit"], start["uncommitted_changes"])  # code loaded now
        self.start_epoch = start_epoch  # the first epoch this session trains (> epochs: it only re-evaluates)

    def write(self, run_state, **extra):
        """Write the results JSON (to --out and to --results) with `extra` fields added."""
        from lstm_lab.checkpoint import atomic_write_json
        session = {**provenance(self.argv, self.device, self.code), "date_started": self.started,
                   "start_epoch": self.start_epoch}
        sessions = [s for s in self.sessions if s["date_started"] != self.started] + [session]
        record = results_record(self.args, self.model_config, self.train_config, run_state, self.parameters)
        record = {**record, **extra, **{k: v for k, v in session.items() if k not in ("date_started", "start_epoch")}, "sessions": sessions}
        for path in self.paths:
            atomic_write_json(record, path)
        return record

    def epoch_done(self, model, optimizer, run_state):
        """`train`'s on_epoch: checkpoint, best model if it improved, results JSON, one log line."""
        from lstm_lab.checkpoint import atomic_save, save_checkpoint
        save_checkpoint(self.out / "checkpoint.pt", model, optimizer, self.model_config, self.train_config, run_state)
        r = run_state["history"][-1]
        if r["improved"]:
            atomic_save({"state_dict": model.state_dict(), "config": {"model": asdict(self.model_config)},
                         "epoch": run_state["epoch"]}, self.out / "best.pt")
        self.write(run_state)
        print(f"epoch {r['epoch']:3d}  lr {r['lr']:.4g}  train ppl {r['train_ppl']:8.2f}  valid ppl "
              f"{r['valid_ppl']:8.2f}  {r['train_seconds']:6.0f} s  {r['tokens_per_second']:6.0f} tok/s", flush=True)

    def finish(self, model, corpus, run_state):
        """Test the final model as the paper does (and the best validation epoch's), with one stream; record
        samples from the final model; mark the results complete."""
        start, batch_size = time.perf_counter(), self.train_config.test_batch_size
        final = self.test_and_valid(model, corpus)
        samples = record_samples(model, corpus.vocab)
        best_epoch = load_best(model, self.out / "best.pt")
        best = final if best_epoch == run_state["epoch"] else self.test_and_valid(model, corpus)
        seconds = time.perf_counter() - start
        self.write(run_state, complete=True, test_ppl=final["test"], final_valid_ppl=final["valid"],
                   best_epoch=best_epoch, best_epoch_test_ppl=best["test"], best_epoch_valid_ppl=best["valid"],
                   test_eval=f"model after the last epoch ({run_state['epoch']}), as in the paper; batch size "
                             f"{batch_size}, state carried across the whole text",
                   test_eval_seconds=seconds, samples=samples)
        print(f"test ppl {final['test']:.2f}, valid ppl {final['valid']:.2f} after epoch {run_state['epoch']}; "
              f"best valid epoch {best_epoch}: test {best['test']:.2f}, valid {best['valid']:.2f} "
              f"(batch size {batch_size}, {seconds:.0f} s)")

    def test_and_valid(self, model, corpus):
        """{"test": ppl, "valid": ppl} with test_batch_size streams (1: the whole text as context)."""
        from lstm_lab.train import evaluate
        batch_size = self.train_config.test_batch_size
        return {split: evaluate(model, corpus.splits[split], batch_size, 100, self.device)["ppl"]
                for split in ("test", "valid")}


def build_run(args, device):
    """Model and training configs, corpus and a freshly initialised model for `train`."""
    from dataclasses import replace
    from lstm_lab.config import preset
    from lstm_lab.corpus import load_corpus
    from lstm_lab.model import LanguageModel
    from lstm_lab.runtime import seed_everything
    overrides = {"rnn": args.rnn, "epochs": args.epochs, "max_batches": args.max_batches, "seed": args.seed,
                 "tie_weights": True if args.tie_weights else None}
    model_config, train_config = preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})
    corpus = load_corpus(train_config.corpus, data_dir=args.data_dir, progress=not args.no_progress)
    model_config = replace(model_config, vocab_size=len(corpus.vocab))
    seed_everything(train_config.seed)
    return model_config, train_config, corpus, LanguageModel(model_config).to(device)


def resume_from(out, model, optimizer, model_config, train_config, device):
    """Load out/checkpoint.pt into model and optimizer, restore the random generators; returns the run state."""
    from lstm_lab.checkpoint import load_checkpoint, load_model_state, run_state_of, set_rng_state
    checkpoint = load_checkpoint(out / "checkpoint.pt", map_location=device)
    wanted = {"model": asdict(model_config), "train": asdict(train_config)}
    if checkpoint["config"] != wanted:
        raise SystemExit(f"error: {out} was trained with another configuration:\n  saved     "
                         f"{checkpoint['config']}\n  requested {wanted}")
    load_model_state(model, checkpoint)
    optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_state(checkpoint["rng"])
    return run_state_of(checkpoint)


def check_out_dir(out, resume):
    """A fresh run needs an empty --out; --resume needs a checkpoint there."""
    has_run = (out / "checkpoint.pt").exists()
    if has_run and not resume:
        raise SystemExit(f"error: {out} already holds a run: add --resume to continue it, or pick another --out")
    if resume and not has_run:
        raise SystemExit(f"error: --resume given but {out} holds no checkpoint.pt")


def train_command(args, argv):
    """`train`: fresh or resumed run; checkpoint, best model and results JSON written after every epoch."""
    import torch
    from lstm_lab.checkpoint import atomic_write_json
    from lstm_lab.model import count_parameters
    from lstm_lab.runtime import pick_device
    from lstm_lab.train import new_run_state, train
    out, device = Path(args.out), pick_device(args.device)
    check_out_dir(out, args.resume)
    model_config, train_config, corpus, model = build_run(args, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=train_config.lr)
    run_state = (resume_from(out, model, optimizer, model_config, train_config, device) if args.resume
                 else new_run_state(train_config))
    atomic_write_json(corpus.vocab.itos, out / "vocab.json")
    recorder = RunRecorder(args, argv, device, model_config, train_config, count_parameters(model),
                           start_epoch=run_state["epoch"] + 1)
    data = {"train": corpus.splits["train"], "valid": corpus.splits["valid"]}
    train(model, data, train_config, device, run_state, optimizer, recorder.epoch_done, not args.no_progress)
    if run_state["epoch"] == 0:
        return 1
    recorder.finish(model, corpus, run_state)
    return 0


def record_samples(model, vocab, seed=0, steps=40):
    """A few sentences sampled from the trained model, recorded with the settings that produced them."""
    import torch
    from lstm_lab.generate import generate
    samples = []
    for prompt, temperature, top_k in ((["<eos>"], 1.0, None), (["<eos>"], 0.7, None), (["the"], 1.0, 40)):
        generator = torch.Generator().manual_seed(seed)
        words = generate(model, vocab, prompt, steps, temperature, top_k, generator)
        samples.append({"prompt": " ".join(prompt), "temperature": temperature, "top_k": top_k, "seed": seed,
                        "text": " ".join(words)})
    return samples


def load_best(model, path):
    """Load the weights of best.pt into `model`; returns the epoch they are from."""
    from lstm_lab.checkpoint import load_checkpoint, load_model_state
    best = load_checkpoint(path, map_location=next(model.parameters()).device)
    load_model_state(model, best)
    return best["epoch"]


def load_run(out, device, weights="last"):
    """(model, vocab, TrainConfig) of a finished or running run folder.

    weights: "last" (checkpoint.pt, the latest epoch) or "best" (best.pt, the best validation epoch)."""
    from lstm_lab.checkpoint import checkpoint_configs, load_checkpoint, load_model_state
    from lstm_lab.corpus import Vocab
    from lstm_lab.model import LanguageModel
    out = Path(out)
    if not (out / "checkpoint.pt").is_file():
        raise SystemExit(f"error: {out} holds no checkpoint.pt; train first: python -m lstm_lab train --out {out}")
    checkpoint = load_checkpoint(out / "checkpoint.pt", map_location=device)
    model_config, train_config = checkpoint_configs(checkpoint)
    model = LanguageModel(model_config).to(device)
    if weights == "last":
        load_model_state(model, checkpoint)
    else:
        load_best(model, out / "best.pt")
    return model, Vocab(json.loads((out / "vocab.json").read_text())), train_config


def evaluate_command(args, argv):
    """`evaluate`: perplexity of a run's model (last or best epoch) on a split."""
    from lstm_lab.corpus import load_corpus
    from lstm_lab.runtime import pick_device
    from lstm_lab.train import evaluate
    device = pick_device(args.device)
    model, vocab, train_config = load_run(args.out, device, args.weights)
    corpus = load_corpus(train_config.corpus, data_dir=args.data_dir, progress=False)
    if corpus.vocab.itos != vocab.itos:
        raise SystemExit(f"error: the vocabulary in {args.out} does not match corpus {train_config.corpus}")
    result = evaluate(model, corpus.splits[args.split], args.batch_size, 100, device)
    print(f"{args.split} perplexity {result['ppl']:.2f} over {result['tokens']} tokens "
          f"(batch size {args.batch_size})")
    return 0


def generate_command(args, argv):
    """`generate`: sample text from a run's model (last or best epoch)."""
    import torch
    from lstm_lab.generate import generate
    from lstm_lab.runtime import pick_device
    device = pick_device(args.device)
    model, vocab, _ = load_run(args.out, device, args.weights)
    prompt = args.prompt.split()
    unknown = [t for t in prompt if t not in vocab.stoi]
    if unknown:
        raise SystemExit(f"error: prompt token(s) {unknown} not in the vocabulary of {len(vocab)} tokens")
    generator = torch.Generator().manual_seed(args.seed)
    words = generate(model, vocab, prompt, args.steps, args.temperature, args.top_k, generator)
    print(" ".join(prompt + words))
    return 0
