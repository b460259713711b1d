"""Write the commit of lstm_lab that every page installs on Colab: the last commit that changed the package.

    python tools/pin_book.py            # rewrite the first cell of every page that calls start_chapter
    python tools/pin_book.py --check    # only say whether they are up to date (exit status 1 if not)

The first cell of a page (`lstm_lab.book.chapter.SETUP_CELL`) installs lstm_lab from the repository at a fixed
commit, so that a page runs against the package it was written for.  A commit cannot name itself, so the page
names the last commit that changed the package (lstm_lab/ and pyproject.toml), and its package is this checkout's
exactly.  After a commit that changes the package, run this and commit the pages: tests/test_colab_setup.py
fails until then.  The package must be committed first (the pages would name a commit without its changes).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from lstm_lab.book.chapter import setup_cell  # noqa: E402  (the repository's package, not an installed copy)
from run_chapters import toc_notebooks  # noqa: E402

PACKAGE = ["lstm_lab", "pyproject.toml"]  # what pip installs from the repository


def git(*args, repo=REPO):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def package_commit(repo=REPO):
    """The last commit that changed the package; SystemExit when the package has uncommitted changes."""
    if git("status", "--porcelain", "--", *PACKAGE, repo=repo):
        raise SystemExit("pin_book: lstm_lab/ or pyproject.toml has uncommitted changes: commit the package first")
    return git("log", "-1", "--format=%H", "--", *PACKAGE, repo=repo)


def page_name(path, repo=REPO):
    """The name start_chapter takes: "01_lstm_cell" for a chapter, "appendix/assignment" for another page."""
    relative = path.relative_to(repo).with_suffix("").as_posix()
    return relative.removeprefix("chapters/")


def setup_cell_of(notebook):
    """The first code cell of a notebook (a dict), or None: where a page's setup cell is."""
    return next((cell for cell in notebook["cells"] if cell["cell_type"] == "code"), None)


def pages(repo=REPO):
    """{path: its notebook as a dict} of the pages in _toc.yml whose first code cell starts the chapter."""
    found = {}
    for path in toc_notebooks(repo):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        first = setup_cell_of(notebook)
        if first and "start_chapter(" in "".join(first["source"]):
            found[path] = notebook
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is not up to date")
    args = parser.parse_args(argv)
    commit = package_commit()
    stale = []
    for path, notebook in pages().items():
        first = setup_cell_of(notebook)
        wanted = setup_cell(page_name(path), commit)
        if "".join(first["source"]) == wanted:
            continue
        stale.append(path.relative_to(REPO).as_posix())
        if not args.check:
            first["source"] = wanted.splitlines(keepends=True)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    verb = "not up to date" if args.check else "now install"
    print(f"{len(stale)} page(s) {verb} lstm_lab at {commit[:7]}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
