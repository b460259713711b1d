"""Execute the book's chapters top to bottom, as Colab would, without a Jupyter server, and record how it went.

    python tools/run_chapters.py                                    # every notebook in _toc.yml
    python tools/run_chapters.py chapters/03_step_by_step.ipynb --json lstm_lab/recorded/chapters-gpu.json
    python tools/run_chapters.py --executed /tmp/executed           # also keep the executed notebooks
    python tools/run_chapters.py --as-colab --mirror . --json lstm_lab/recorded/chapters-colab-stack.json

Each notebook runs in a fresh IPython kernel (nbclient starts it directly: no Jupyter server, no browser),
in its own folder as the book build does, with $LSTM_LAB_SOLUTIONS set to "1" unless it is set already (the
coursework page's blanks filled by the package's solutions, as `make book` does).  Cells tagged
`raises-exception` may raise; any other error stops that notebook and is recorded with the cell it came from, and the next notebook runs.  An error a cell shows
without stopping -- a display formatter's exception (a widget that cannot draw itself), which leaves the cell's
status "ok" -- fails the notebook too ("error output") unless the cell is tagged `raises-exception`.  The JSON holds, per
notebook, the status, the wall time, the device line the setup cell printed, and where, when and from which
commit it ran; `--update` re-runs some notebooks and keeps the other rows of an earlier record.  Needs
nbclient and ipykernel: `pip install nbclient ipykernel` (plus whatever the chapters import) is enough on a
GPU machine without Jupyter.  The exit status is the number of notebooks that failed.

--as-colab runs the pages as Colab does: every kernel starts with a stand-in `google.colab` module, so each page's
setup cell installs lstm_lab with pip, from the repository at the commit the page names, into the environment
that runs the kernels (which should not hold lstm_lab yet).  --mirror sends the repository's address to a local
clone (git's url.insteadOf), so that install needs no access to GitHub.  The record then says which lstm_lab the
kernels ran and the versions of the packages around it.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from lstm_lab.book.chapter import REPOSITORY  # noqa: E402
from lstm_lab.checkpoint import atomic_write_json  # noqa: E402
from lstm_lab.provenance import provenance, utc_now  # noqa: E402  (the repository's package, not an installed copy)
from lstm_lab.runtime import pick_device  # noqa: E402


def toc_notebooks(repo=REPO):
    """The notebooks listed in _toc.yml, in book order (entries that are .md files are left out)."""
    files = re.findall(r"^\s*-?\s*(?:file|root):\s*(\S+)", (repo / "_toc.yml").read_text(), re.MULTILINE)
    return [repo / f"{name}.ipynb" for name in files if (repo / f"{name}.ipynb").is_file()]


def first_output_line(nb, marker="torch "):
    """The first line a cell printed that starts with `marker`: the setup cell's 'torch X on DEVICE ...'."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(marker):
                    return line
    return None


def failing_cell(nb):
    """(index, first source line) of the last code cell that has an error output, or (None, None)."""
    found = (None, None)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            found = (index, cell.source.splitlines()[0] if cell.source else "")
    return found


def undeclared_error(nb):
    """(index, first source line, "Name: value") of the first code cell with an error output that no
    `raises-exception` tag declares, or None."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                source = cell.source.splitlines()[0] if cell.source else ""
                return index, source, f"{output.get('ename')}: {output.get('evalue')}"[:500]
    return None


def execute(path, timeout, kernel_name="python3"):
    """Run one notebook in a fresh kernel; returns (executed notebook, record dict)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start, status, error = time.perf_counter(), "ok", None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        status = {"CellExecutionError": "error", "CellTimeoutError": "timeout"}.get(type(exc).__name__, "dead kernel")
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # without the terminal colours
        error = text.splitlines()[-1][:500] if text else type(exc).__name__
    seconds = time.perf_counter() - start
    cell, source = failing_cell(nb) if status != "ok" else (None, None)
    shown = undeclared_error(nb) if status == "ok" else None  # an error shown by a cell that went on
    if shown:
        status, (cell, source, error) = "error output", shown
    record = {"notebook": str(path.relative_to(REPO)), "status": status, "seconds": round(seconds, 1),
              "setup_line": first_output_line(nb), "error": error, "error_cell": cell, "error_cell_source": source}
    return nb, record


PACKAGES = ["torch", "numpy", "matplotlib", "ipywidgets", "ipykernel", "nbclient", "tqdm", "ninja"]


def package_versions(names=PACKAGES):
    """{name: version or None} of the packages installed beside the kernels (the chapters' own stack)."""
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    return {name: version(name) for name in names}


def kernel_lstm_lab():
    """Where the lstm_lab the kernels import was installed from ("lstm_lab @ git+URL@COMMIT"), or None when it is
    not a git install (a checkout, an editable install): read outside this checkout, as a kernel imports it."""
    program = "from lstm_lab.book.chapter import read_installed_source; print(read_installed_source())"
    done = subprocess.run([sys.executable, "-c", program], cwd=tempfile.gettempdir(), capture_output=True, text=True)
    found = done.stdout.strip()
    return found if done.returncode == 0 and found != "None" else None


def as_colab(folder, mirror=None):
    """Set this process's environment, which every kernel inherits, so that kernels start as on Colab: IPython
    imports a stand-in google.colab module at start (a startup file in `folder`), and, with `mirror`, git fetches
    the repository from that folder.  Returns what the record should say."""
    startup = Path(folder) / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-colab.py").write_text("import sys, types\n"
                                         "sys.modules['google.colab'] = types.ModuleType('google.colab')\n")
    os.environ["IPYTHONDIR"] = str(Path(folder) / "ipython")
    if mirror:
        config = Path(folder) / "gitconfig"
        config.write_text(f'[url "{Path(mirror).resolve()}"]\n\tinsteadOf = {REPOSITORY}\n')
        os.environ["GIT_CONFIG_GLOBAL"] = str(config)
    return {"as_colab": True, "repository": f"{REPOSITORY} from {Path(mirror).resolve()}" if mirror else REPOSITORY}


def merge(old_rows, new_rows):
    """The rows of an earlier record with those of notebooks run again replaced, in book order."""
    new = {row["notebook"]: row for row in new_rows}
    kept = [new.pop(row["notebook"], row) for row in old_rows]
    return kept + list(new.values())


def build_parser():
    parser = argparse.ArgumentParser(prog="python tools/run_chapters.py", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every one in _toc.yml)")
    parser.add_argument("--json", default=None, help="write the record here (e.g. lstm_lab/recorded/chapters-gpu.json)")
    parser.add_argument("--executed", default=None, help="folder to save the executed notebooks in")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run (default 1800)")
    parser.add_argument("--note", default=None, help="a remark stored with each notebook's row (e.g. what else ran)")
    parser.add_argument("--as-colab", action="store_true",
                        help="kernels start with a stand-in google.colab: each page installs lstm_lab with pip")
    parser.add_argument("--mirror", default=None,
                        help=f"with --as-colab: a local clone git fetches instead of {REPOSITORY}")
    parser.add_argument("--update", action="store_true",
                        help="keep the other notebooks' rows of an existing --json, replacing those run now")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    os.environ.setdefault("LSTM_LAB_SOLUTIONS", "1")  # as `make book`: the kernels inherit it
    paths = [Path(p).resolve() for p in args.notebooks] or toc_notebooks()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such notebook: {', '.join(missing)}")
    if args.mirror and not args.as_colab:
        raise SystemExit("error: --mirror goes with --as-colab")
    record = provenance([], pick_device())
    record["command"] = "python tools/run_chapters.py " + " ".join(argv)
    if args.as_colab:
        record.update(as_colab(tempfile.mkdtemp(prefix="as-colab-"), args.mirror))
    record["packages"] = package_versions()
    earlier = json.loads(Path(args.json).read_text())["notebooks"] if args.update and Path(args.json).is_file() else []
    record["notebooks"] = earlier
    for path in paths:
        nb, row = execute(path, args.timeout)
        row.update(device=record["device"], torch_version=record["torch_version"], commit=record["commit"],
                   uncommitted_changes=record["uncommitted_changes"], date=utc_now(), note=args.note)
        record["notebooks"] = merge(record["notebooks"], [row])
        print(f"{row['notebook']:40} {row['status']:8} {row['seconds']:7.1f} s  {row['error'] or ''}", flush=True)
        if args.executed:
            Path(args.executed).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(args.executed) / path.name)
        if args.as_colab:  # the first page installs it: ask again after each page
            record["lstm_lab_installed"] = kernel_lstm_lab()
        if args.json:
            atomic_write_json(record, args.json)
    failed = sum(row["status"] != "ok" for row in record["notebooks"] if Path(REPO / row["notebook"]) in paths)
    print(f"{len(paths) - failed} of {len(paths)} notebooks ran to the end on {record['device']}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
