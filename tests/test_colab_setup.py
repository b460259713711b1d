"""The first cell of every page: on Colab it installs lstm_lab at a fixed commit whose package is this checkout's
(tools/pin_book.py writes it), an install that fails ends in one line with git's reason, and start_chapter refuses
to run a page against lstm_lab installed from another commit.  The failing installs run the cell as Colab would
(a google.colab module, pip in a subprocess) against repositories on this machine: git's url.insteadOf sends
the repository's address to a folder, so nothing reaches the network."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lstm_lab.book.chapter as chapter
from lstm_lab.book.chapter import REPOSITORY, setup_cell

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import pin_book  # noqa: E402

PAGES = pin_book.pages(ROOT)
PIN = re.compile(r'LSTM_LAB = "lstm_lab @ git\+(\S+)@([0-9a-f]{40})"')


def pinned(path):
    return "".join(pin_book.setup_cell_of(PAGES[path])["source"])


def test_the_repository_is_the_one_the_book_links_to():
    assert f"  url: {REPOSITORY}\n" in (ROOT / "_config.yml").read_text()


def test_every_page_that_runs_code_starts_with_the_setup_cell():
    names = {pin_book.page_name(path, ROOT) for path in PAGES}
    assert {f"0{n}" for n in range(1, 10)} <= {name[:2] for name in names} and "appendix/assignment" in names


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_the_setup_cell_is_the_template_with_the_page_and_a_full_commit(path):
    source = pinned(path)
    found = PIN.search(source)
    assert found and found[1] == REPOSITORY, "the setup cell names no full commit: run python tools/pin_book.py"
    assert source == setup_cell(pin_book.page_name(path, ROOT), found[2]), "run python tools/pin_book.py"


def test_the_pages_install_the_package_of_this_checkout():
    commits = {PIN.search(pinned(path))[2] for path in PAGES}
    assert len(commits) == 1, f"the pages name {len(commits)} commits: run python tools/pin_book.py"
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the pinned commit cannot be compared")
    commit = commits.pop()
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
    assert known.returncode == 0, f"commit {commit[:7]} is not in this checkout's history (a shallow clone?)"
    changed = subprocess.run(["git", "diff", "--name-only", commit, "HEAD", "--", *pin_book.PACKAGE], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert not changed, (f"the pages install lstm_lab at {commit[:7]}, and {len(changed)} file(s) of the package "
                         f"changed since ({changed[:3]}): run python tools/pin_book.py and commit the pages")


def run_on_colab(cell, tmp_path, rewrite_to):
    """Run a setup cell as Colab would, with git sending the repository's address to `rewrite_to`."""
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "{rewrite_to}"]\n\tinsteadOf = {REPOSITORY}\n')
    program = ("import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
               f"exec({cell!r})")
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_GLOBAL": str(config),
                               "GIT_TERMINAL_PROMPT": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


@pytest.mark.parametrize("where, expected", [
    ("https://github.invalid/lstm-lab", "Could not resolve host: github.invalid (is this runtime online?)"),
    ("{tmp}/no-repository", "does not appear to be a git repository"),
    ("{root}", "not our ref 00000000"),  # this repository, without that commit
])
def test_an_install_that_fails_ends_in_one_line_with_gits_reason(tmp_path, where, expected):
    if not (ROOT / ".git").exists() and "{root}" in where:
        pytest.skip("not a git checkout")
    cell = setup_cell("01_lstm_cell", "0" * 40)
    result = run_on_colab(cell, tmp_path, where.format(tmp=tmp_path, root=ROOT))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-500:]
    assert lines[-1].startswith(f"Could not install lstm_lab @ git+{REPOSITORY}@{'0' * 40}: ") and expected in lines[-1]


def fake_install(monkeypatch, direct_url):
    class Distribution:
        def read_text(self, name):
            return json.dumps(direct_url) if name == "direct_url.json" and direct_url else None
    monkeypatch.setattr(chapter.metadata, "distribution", lambda name: Distribution())


def test_the_installed_source_is_read_from_pips_record(monkeypatch):
    fake_install(monkeypatch, {"url": REPOSITORY, "vcs_info": {"vcs": "git", "commit_id": "a" * 40}})
    assert chapter.read_installed_source() == f"lstm_lab @ git+{REPOSITORY}@{'a' * 40}"
    fake_install(monkeypatch, {"url": "file:///work/lstm-lab", "dir_info": {"editable": True}})
    assert chapter.read_installed_source() is None  # an editable install: the checkout is the source
    fake_install(monkeypatch, None)
    assert chapter.read_installed_source() is None  # installed from a wheel or an index


def test_a_page_refuses_lstm_lab_from_another_commit(monkeypatch, capsys):
    monkeypatch.setattr(chapter, "load_recorded", lambda name: None)
    source = f"lstm_lab @ git+{REPOSITORY}@{'b' * 40}"
    monkeypatch.setattr(chapter, "INSTALLED_SOURCE", f"lstm_lab @ git+{REPOSITORY}@{'a' * 40}")
    with pytest.raises(RuntimeError, match="written for lstm_lab at commit bbbbbbb, and this kernel runs it from "
                                           "commit aaaaaaa: run !pip uninstall -y lstm_lab, restart the kernel"):
        chapter.start_chapter("01_lstm_cell", source=source, prefer="cpu")
    assert capsys.readouterr().out == ""  # refused before anything was set up
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(chapter, "INSTALLED_SOURCE", source)
        assert chapter.start_chapter("01_lstm_cell", source=source, prefer="cpu") == torch.device("cpu")
        monkeypatch.setattr(chapter, "INSTALLED_SOURCE", None)  # a checkout or an editable install
        assert chapter.start_chapter("01_lstm_cell", source=source, prefer="cpu") == torch.device("cpu")
    finally:
        torch.set_num_threads(threads)
