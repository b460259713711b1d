"""Record what a correct solution of the coursework assignment reaches: the package's solutions run through the
assignment's comparison (`lstm_lab.check.assignment.compare`) on this machine's device, with its preset.

    python tools/record_assignment.py                  # on a CPU: lstm_lab/recorded/assignment-cpu.json
    python tools/record_assignment.py --device cuda    # on a GPU (Colab): lstm_lab/recorded/assignment-gpu.json

On a CPU it runs with one thread, as the assignment notebook does.  The record holds the provenance (device,
versions, commit, date), the preset and one row per model; the notebook's "Expected results" prints it.
"""
import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lstm_lab.check import solutions  # noqa: E402
from lstm_lab.check.assignment import RECORDS, assignment_data, assignment_models, compare, preset_for  # noqa: E402
from lstm_lab.checkpoint import atomic_write_json  # noqa: E402
from lstm_lab.provenance import provenance  # noqa: E402
from lstm_lab.runtime import pick_device  # noqa: E402

RECORDED = Path(__file__).resolve().parent.parent / "lstm_lab" / "recorded"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python tools/record_assignment.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else pick_device()
    if device.type == "cpu":
        torch.set_num_threads(1)  # as the notebook: small operations run faster on one thread
    config = preset_for(device)
    record = provenance([], device)
    record["command"] = "python tools/record_assignment.py " + " ".join(argv)
    record["config"] = asdict(config)
    data = assignment_data(config)
    record["rows"] = compare(assignment_models(solutions.LSTM), solutions.train_windows, solutions.evaluate, data,
                             config, device)
    path = RECORDED / RECORDS["GPU" if device.type == "cuda" else "CPU"]
    atomic_write_json(record, path)
    for row in record["rows"]:
        print(f"{row['model']:22} {row['seconds']:7.1f} s  valid ppl {row['valid ppl']:.2f}")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
