"""lstm_lab.data.download and lstm_lab.data.corpus: checked lookup and download, vocabularies, batchify and BPTT
windows."""
import contextlib
import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import torch

from lstm_lab import files
from lstm_lab.data import download
from lstm_lab.data.corpus import Vocab, batchify, bptt_windows, char_tokens, num_windows, word_tokens
from lstm_lab.data.manifest import FILES, FileSpec, tang_raw_specs

SHARED = os.environ.get("LSTM_LAB_DATA")
needs_data = pytest.mark.skipif(not (SHARED and (Path(SHARED) / "ptb" / "train.txt").is_file()),
                                reason="set $LSTM_LAB_DATA to the folder holding the corpora")
PAYLOAD = b"the cat sat on the mat\n" * 100


def spec_for(payload, path="toy/file.txt", url=None):
    return FileSpec(path, len(payload), hashlib.sha256(payload).hexdigest(), url)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "file.txt").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    with serving(handler) as url:
        yield url


@contextlib.contextmanager
def serving(handler):
    """Run an HTTP server with `handler` on 127.0.0.1 in a thread; yields its base URL, stops it after."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class BreakingHandler(http.server.BaseHTTPRequestHandler):
    """Sends the first 1,000 bytes of PAYLOAD, then closes the connection; /sized announces the whole length."""

    def do_GET(self):
        self.send_response(200)
        if self.path == "/sized":
            self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[:1000])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def breaking_server():
    """A local HTTP server on 127.0.0.1 whose connections break early; yields its base URL."""
    with serving(BreakingHandler) as url:
        yield url


def leftovers(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_file())


def test_checksum_mismatch_names_file_hashes_and_fix(tmp_path):
    """Also the call chapter 6 shows failing (its cell tagged raises-exception)."""
    spec = FILES["ptb/valid.txt"]
    bad = tmp_path / spec.path
    bad.parent.mkdir(parents=True)
    bad.write_text("not penn treebank\n")
    with pytest.raises(download.ChecksumError) as info:
        download.find_file(spec, [tmp_path], allow_download=False)
    message = str(info.value)
    assert str(bad) in message and spec.sha256 in message
    assert hashlib.sha256(b"not penn treebank\n").hexdigest() in message
    assert "place it by hand" in message and spec.url in message


def test_missing_file_offline_raises_with_instructions(tmp_path):
    spec = FILES["ptb/test.txt"]
    with pytest.raises(download.DataNotFoundError) as info:
        download.find_file(spec, [tmp_path / "a", tmp_path / "b"], allow_download=False)
    message = str(info.value)
    assert "ptb/test.txt" in message and spec.sha256 in message and spec.url in message
    assert str(tmp_path / "a" / "ptb" / "test.txt") in message


def test_lookup_order_prefers_first_folder(tmp_path):
    spec = spec_for(PAYLOAD)
    for name in ("first", "second"):
        (tmp_path / name / "toy").mkdir(parents=True)
        (tmp_path / name / spec.path).write_bytes(PAYLOAD)
    assert download.find_file(spec, [tmp_path / "first", tmp_path / "second"]) == tmp_path / "first" / spec.path
    assert download.data_dirs(tmp_path / "env", repo_data=tmp_path / "repo") == [tmp_path / "env", tmp_path / "repo"]


def test_download_from_local_server(server, tmp_path):
    spec = spec_for(PAYLOAD, url=f"{server}/file.txt")
    path = download.find_file(spec, [tmp_path / "nowhere"], download_dir=tmp_path / "dl", progress=False)
    assert path == tmp_path / "dl" / "toy" / "file.txt"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path / "dl") == ["file.txt"]  # no temporary file left behind


def test_corrupt_download_leaves_nothing(server, tmp_path):
    wrong = FileSpec("toy/file.txt", len(PAYLOAD), "0" * 64, f"{server}/file.txt")
    with pytest.raises(download.ChecksumError) as info:
        download.find_file(wrong, [tmp_path / "nowhere"], download_dir=tmp_path / "dl", progress=False)
    assert "0" * 64 in str(info.value) and hashlib.sha256(PAYLOAD).hexdigest() in str(info.value)
    assert leftovers(tmp_path / "dl") == []


def test_failed_download_leaves_nothing(server, tmp_path):
    missing = spec_for(PAYLOAD, url=f"{server}/no-such-file.txt")
    with pytest.raises(download.DataNotFoundError, match="no-such-file"):
        download.find_file(missing, [tmp_path / "nowhere"], download_dir=tmp_path / "dl", progress=False)
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("path", ["/sized", "/unsized"])
def test_a_broken_connection_says_how_many_bytes_arrived(breaking_server, tmp_path, path):
    spec = spec_for(PAYLOAD, url=breaking_server + path)  # /unsized: the size expected comes from the spec
    with pytest.raises(download.IncompleteDownloadError) as info:
        download.find_file(spec, [tmp_path / "nowhere"], download_dir=tmp_path / "dl", progress=False)
    message = str(info.value)
    assert f"the connection broke while downloading {spec.url}: 1,000 of {len(PAYLOAD):,} bytes arrived" in message
    assert str(tmp_path / "dl" / spec.path) in message and "wrong version" not in message
    assert isinstance(info.value, download.DataNotFoundError)
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.skipif(files.fcntl is None, reason="without file locks (Windows) .part files are never removed")
def test_stale_part_files_are_removed_by_the_next_write(server, tmp_path):
    """A killed download (or checkpoint write) leaves .NAME.*.part; the next write of NAME removes it, but not
    the .part file of a writer that is still at work (it holds a lock on it)."""
    folder = tmp_path / "dl" / "toy"
    folder.mkdir(parents=True)
    (folder / ".file.txt.dead1234.part").write_bytes(PAYLOAD[:10])  # its writer was killed
    (folder / ".other.txt.dead5678.part").write_bytes(b"")  # another file's: left for that file's next write
    with open(folder / ".file.txt.busy9999.part", "wb") as busy:
        assert files.try_lock(busy)  # a live writer holds it
        spec = spec_for(PAYLOAD, url=f"{server}/file.txt")
        download.find_file(spec, [tmp_path / "nowhere"], download_dir=tmp_path / "dl", progress=False)
        assert leftovers(folder) == [".file.txt.busy9999.part", ".other.txt.dead5678.part", "file.txt"]
    files.write_atomically(folder / "other.txt", lambda f: f.write(b"x"))
    files.remove_stale_parts(folder)
    assert leftovers(folder) == ["file.txt", "other.txt"]


def test_lstm_lab_data_naming_a_missing_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_LAB_DATA", str(tmp_path / "no-such-folder"))
    with pytest.raises(download.DataNotFoundError) as info:
        download.fetch("ptb", allow_download=False, progress=False)
    assert f"$LSTM_LAB_DATA is {tmp_path / 'no-such-folder'}, which is not a folder" in str(info.value)
    monkeypatch.setenv("LSTM_LAB_DATA", str(tmp_path))
    assert download.data_dirs()[0] == tmp_path  # an existing folder is searched first, as before


def test_batchify_layout_matches_docstring():
    source = batchify(torch.arange(26), 4)  # a..z as 0..25
    assert source.shape == (6, 4)
    assert source[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # stream 0 reads a b c d e f
    assert source[0].tolist() == [0, 6, 12, 18]  # first row: a g m s
    with pytest.raises(ValueError, match="1-D"):
        batchify(torch.zeros(2, 3), 2)


def test_bptt_windows_tile_each_stream():
    source = batchify(torch.arange(26), 4)  # (6, 4)
    windows = list(bptt_windows(source, 2))
    assert len(windows) == num_windows(source, 2) == 3
    assert [w[0].shape[0] for w in windows] == [2, 2, 1]  # the last window is shorter
    inputs = torch.cat([w[0] for w in windows])
    targets = torch.cat([w[1] for w in windows])
    assert torch.equal(inputs, source[:-1]) and torch.equal(targets, source[1:])  # next token, no gap


def test_vocab_round_trip_and_unknown_token():
    tokens = word_tokens("b a b\nc b\n")
    assert tokens == ["b", "a", "b", "<eos>", "c", "b", "<eos>"]
    vocab = Vocab.build(tokens)
    assert vocab.itos == ["b", "<eos>", "a", "c"]  # most frequent first, ties in order of appearance
    assert vocab.decode(vocab.encode(tokens)) == tokens
    with pytest.raises(KeyError, match="'zebra'"):
        vocab.encode(["zebra"])
    assert char_tokens("ab\n") == ["a", "b", "\n"]


def test_tang_derivation_on_synthetic_json():
    first = json.dumps([{"paragraphs": ["床前明月光， ", " 疑是地上霜。"], "title": "t", "author": "a"},
                        {"paragraphs": ["", " "], "title": "empty", "author": "a"}], ensure_ascii=False)
    second = json.dumps([{"paragraphs": ["举头 望明月，\t低头思故乡。"], "title": "t", "author": "b"}],
                        ensure_ascii=False)
    assert download.derive_tang_poems([first, second]) == ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"]


def test_tang_specs_are_the_58_pinned_files():
    specs = tang_raw_specs()
    assert len(specs) == 58 and specs[0].path == "tang/raw/poet.tang.0.json"
    assert specs[-1].url.endswith("/poetry/poet.tang.57000.json") and "61dd34ea" in specs[-1].url


@needs_data
def test_tang_poems_rebuilt_from_raw_match_pinned_hash(tmp_path):
    spec = FILES["tang/poems.txt"]
    path = download.build_tang_poems([Path(SHARED)], tmp_path, spec, allow_download=False, progress=False)
    assert path == tmp_path / spec.path and files.sha256_of(path) == spec.sha256
    assert leftovers(tmp_path) == ["poems.txt"]


def test_missing_tang_poems_name_every_way_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "default_data_dir", lambda: tmp_path / "repo-data")  # none of the corpora there
    with pytest.raises(download.DataNotFoundError) as info:
        download.fetch("tang", data_dir=tmp_path, allow_download=False, progress=False)
    message = str(info.value)
    assert "\n" not in message and "tang/raw/poet.tang.0.json not found" in message
    assert f"tang/poems.txt itself (sha256 {FILES['tang/poems.txt'].sha256})" in message
    assert "tang/raw/poet.tang.json.tar.gz, the raw files packed" in message
    assert "all 58 raw files tang/raw/poet.tang.0.json ... poet.tang.57000.json, from https://" in message


@needs_data
def test_ptb_counts_match_the_paper():
    from lstm_lab.data.corpus import load_corpus
    corpus = load_corpus("ptb", allow_download=False, progress=False)
    assert len(corpus.vocab) == 10_000
    assert {k: v.numel() for k, v in corpus.splits.items()} == {"train": 929_589, "valid": 73_760, "test": 82_430}


def test_unknown_corpus_lists_choices():
    with pytest.raises(ValueError, match="ptb, wikitext-2, tang, tinyshakespeare"):
        download.fetch("penn")
