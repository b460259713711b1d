"""Finding, downloading and checking the corpora: a registry of pinned files and a careful downloader.

A file is looked for, in this order, in
    1. the folder named by the environment variable $LSTM_LAB_DATA,
    2. the repository's own `data/` folder (./data when lstm_lab is pip-installed, as on Colab),
and only then downloaded (with a progress bar) into `data/`.  Every file is checked against its pinned sha256;
a download goes to a temporary file that is renamed into place only once its hash is right, so a failed or
corrupt download never leaves a half-written file behind.  Introduced in chapter 6.
"""
import hashlib
import http.client
import json
import os
import re
import tarfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from lstm_lab.config import InputError, check_choice
from lstm_lab.data.manifest import FILES, tang_raw_specs
from lstm_lab.files import sha256_of, write_atomically

__all__ = ["CORPORA", "ChecksumError", "DataNotFoundError", "IncompleteDownloadError", "data_dirs", "files_sha256",
           "text_files", "download", "find_file", "fetch", "derive_tang_poems", "build_tang_poems"]

# corpus name -> {split: path under a data folder}
CORPORA = {
    "ptb": {"train": "ptb/train.txt", "valid": "ptb/valid.txt", "test": "ptb/test.txt"},
    "wikitext-2": {"train": "wikitext-2/train.txt", "valid": "wikitext-2/valid.txt", "test": "wikitext-2/test.txt"},
    "tang": {"text": "tang/poems.txt"},
    "tinyshakespeare": {"text": "tinyshakespeare/input.txt"},
}
TANG_TARBALL = "tang/raw/poet.tang.json.tar.gz"  # the 58 raw JSON files packed together (shared folder only)


class ChecksumError(RuntimeError):
    """A data file's sha256 is not the pinned one.  Chapter 6."""


class DataNotFoundError(FileNotFoundError):
    """A data file is nowhere to be found and may not be downloaded.  Chapter 6."""


class IncompleteDownloadError(DataNotFoundError):
    """The connection broke before the whole file arrived.  Chapter 6."""


def default_data_dir():
    """The repository's data/ folder when lstm_lab runs from a checkout, else ./data (pip-installed, e.g. Colab)."""
    repo = Path(__file__).resolve().parents[2]  # lstm_lab/data/download.py -> the repository
    return repo / "data" if (repo / "pyproject.toml").is_file() else Path.cwd() / "data"


def data_dirs(data_dir=None, repo_data=None):
    """The folders searched for data, in order: `data_dir` (default $LSTM_LAB_DATA) then the repo's data/.

    Downloads go to the last one.  $LSTM_LAB_DATA naming a folder that does not exist raises DataNotFoundError
    (a mistyped path would otherwise be skipped silently, and the corpus downloaded again).  Chapter 6."""
    first = data_dir if data_dir is not None else os.environ.get("LSTM_LAB_DATA")
    if data_dir is None and first and not Path(first).is_dir():
        raise DataNotFoundError(f"$LSTM_LAB_DATA is {first}, which is not a folder: point it at the folder that "
                                f"holds the corpora, or unset it to use {repo_data or default_data_dir()}")
    return [Path(d) for d in (first, repo_data or default_data_dir()) if d]


def files_sha256(paths):
    """Hex sha256 naming the text in `paths`: one file's own sha256 (what `sha256sum FILE` prints), or for several
    the sha256 of their `sha256sum` listing, a line "<sha256>  <file name>\n" each, in the order given.

    A run records it to check, when it resumes, that it reads the same text.  Introduced in chapter 6."""
    if len(paths) == 1:
        return sha256_of(paths[0])
    listing = "".join(f"{sha256_of(path)}  {Path(path).name}\n" for path in paths)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def text_files(path):
    """{split: [Path, ...]}: the files of a user's own text, to read in order.

    A file -> {"text": [file]}.  A folder that holds train.txt, valid.txt and test.txt -> those three as the
    splits; any other folder -> {"text": its *.txt files in name order} (not its subfolders).  A "text" is one
    text that `lstm_lab.data.corpus.split_lines` cuts into splits.  Raises DataNotFoundError for a path that does not
    exist or a folder with no .txt file, InputError (a ValueError) for a folder with some of the three split files
    but not all.
    Introduced in chapter 6."""
    path = Path(path)
    if path.is_file():
        return {"text": [path]}
    if not path.is_dir():
        raise DataNotFoundError(f"{path} does not exist: expected a text file or a folder of .txt files")
    names = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
    present = [name for name in names.values() if (path / name).is_file()]
    if len(present) == len(names):
        return {split: [path / name] for split, name in names.items()}
    if present:
        missing = [name for name in names.values() if name not in present]
        raise InputError(f"{path} holds {' and '.join(present)} but no {' or '.join(missing)}: expected all three "
                         f"split files, or none (then its .txt files are joined and split by lines)")
    files = sorted(file for file in path.glob("*.txt") if file.is_file())
    if not files:
        raise DataNotFoundError(f"{path} holds no .txt file: expected a text file or a folder of .txt files")
    return {"text": files}


def how_to_place(spec, dest):
    """The sentence every data error ends with: where the file must go and how to get it by hand."""
    source = (f"download it from {spec.url}" if spec.url
              else "build it from the raw files (lstm_lab.data.download.fetch)")
    return (f"To place it by hand, {source} and save it as {dest}, or point $LSTM_LAB_DATA "
            f"at a folder that holds {spec.path} (sha256 {spec.sha256}).")


def check_file(path, spec, dest=None):
    """Raise ChecksumError (naming the file, both hashes and the fix) unless `path` has the pinned sha256."""
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ChecksumError(f"{dest or path} is corrupt or the wrong version: sha256 {actual}, expected "
                            f"{spec.sha256}. " + how_to_place(spec, dest or path))
    return Path(path)


def copy_body(response, f, total, desc, progress):
    """Copy an HTTP response's body into the open file `f`: (bytes received, whether the connection broke).

    total: the size expected, or None.  A connection that breaks early ends the body too soon (Python 3.11's
    read returns b"") or raises (IncompleteRead, ConnectionResetError, a timeout); both count as broken."""
    received = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
        while True:
            try:
                chunk = response.read(1 << 16)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError):
                return received, True
            if not chunk:
                return received, total is not None and received < total
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))


def download(url, dest, spec=None, progress=True, timeout=60):
    """Download `url` to `dest` atomically, with a progress bar, checked against `spec` if given.

    A connection that breaks early raises IncompleteDownloadError saying how many bytes arrived.  Chapter 6."""
    fix = how_to_place(spec, dest) if spec else ""

    def write(f):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or (spec.bytes if spec else None)
            received, broken = copy_body(response, f, total, Path(dest).name, progress)
        if broken:
            of_total = f" of {total:,}" if total else ""
            raise IncompleteDownloadError(f"the connection broke while downloading {url}: {received:,}{of_total} "
                                          f"bytes arrived, so {dest} was not written. Try again. {fix}")
    try:
        return write_atomically(dest, write, check=(lambda tmp: check_file(tmp, spec, dest)) if spec else None)
    except IncompleteDownloadError:
        raise
    except (OSError, http.client.HTTPException) as error:  # URLError and HTTPError are OSErrors
        raise DataNotFoundError(f"could not download {url} to {dest}: {error}. {fix}") from error


def find_file(spec, dirs, download_dir=None, allow_download=True, progress=True):
    """Path of a checked copy of `spec`: the first one found in `dirs`, else a fresh download into `download_dir`.

    A file that is present but has the wrong hash raises ChecksumError rather than being silently replaced.
    Chapter 6."""
    for folder in dirs:
        path = Path(folder) / spec.path
        if path.is_file():
            return check_file(path, spec)
    download_dir = Path(download_dir or dirs[-1])
    if not allow_download or spec.url is None:
        searched = ", ".join(str(Path(d) / spec.path) for d in dirs)
        raise DataNotFoundError(f"{spec.path} not found (looked in {searched}) and downloading is "
                                f"{'off' if not allow_download else 'impossible for a derived file'}. "
                                + how_to_place(spec, download_dir / spec.path))
    return download(spec.url, download_dir / spec.path, spec, progress)


def fetch(name, data_dir=None, allow_download=True, progress=True):
    """{split: Path} of a registered corpus, each file found or downloaded and checked.

    name: one of CORPORA ("ptb", "wikitext-2", "tang", "tinyshakespeare"); a "text" is one text that
    `lstm_lab.data.corpus.split_lines` cuts into splits.  Introduced in chapter 6."""
    check_choice("corpus", name, tuple(CORPORA))
    dirs = data_dirs(data_dir)
    download_dir = dirs[-1]
    paths = {}
    for split, rel in CORPORA[name].items():
        spec = FILES[rel]
        if name == "tang" and not any((Path(d) / rel).is_file() for d in dirs):
            paths[split] = build_tang_poems(dirs, download_dir, spec, allow_download, progress)
        else:
            paths[split] = find_file(spec, dirs, download_dir, allow_download, progress)
    return paths


def tang_line(record):
    """One poem as one line: its paragraphs joined, all whitespace removed (tang/SOURCE.md "Derivation")."""
    return re.sub(r"\s+", "", "".join(p.strip() for p in record["paragraphs"]))


def derive_tang_poems(json_texts):
    """Poem lines from the raw JSON files' texts, in the order given; empty poems are dropped.  Chapter 6."""
    lines = (tang_line(record) for text in json_texts for record in json.loads(text))
    return [line for line in lines if line]


def tang_raw_texts(dirs, download_dir, allow_download=True, progress=True):
    """The 58 raw JSON texts in derivation order: from a checked tarball if a data folder has one, else files."""
    specs = tang_raw_specs()
    for folder in dirs:
        tarball = Path(folder) / TANG_TARBALL
        if tarball.is_file():
            check_file(tarball, FILES[TANG_TARBALL])
            with tarfile.open(tarball, "r:gz") as tar:
                return [tar.extractfile(Path(spec.path).name).read().decode("utf-8") for spec in specs]
    return [find_file(spec, dirs, download_dir, allow_download, progress).read_text("utf-8") for spec in specs]


def build_tang_poems(dirs, download_dir, spec, allow_download=True, progress=True):
    """Derive tang/poems.txt from the raw JSON into `download_dir`, atomically, and check its sha256.

    A raw file that is missing and cannot be downloaded raises DataNotFoundError naming every way to provide the
    poems: tang/poems.txt itself, the tarball of the raw files, or all 58 raw files.  Chapter 6."""
    try:
        texts = tang_raw_texts(dirs, download_dir, allow_download, progress)
    except DataNotFoundError as error:
        raws = tang_raw_specs()
        raise DataNotFoundError(
            f"the Tang poems are missing: {error} The poems can be given in any of three ways, in "
            f"{' or '.join(map(str, dirs))}: {spec.path} itself (sha256 {spec.sha256}); {TANG_TARBALL}, the raw "
            f"files packed (sha256 {FILES[TANG_TARBALL].sha256}); or all {len(raws)} raw files {raws[0].path} ... "
            f"{Path(raws[-1].path).name}, from {raws[0].url.rsplit('/', 1)[0]}/ (each one's sha256 is in "
            "lstm_lab/data/manifest.py).") from None
    lines = derive_tang_poems(texts)
    payload = "".join(line + "\n" for line in lines).encode("utf-8")
    dest = Path(download_dir) / spec.path
    return write_atomically(dest, lambda f: f.write(payload), check=lambda tmp: check_file(tmp, spec, dest))

