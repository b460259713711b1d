"""lstm_lab.data.corpus.load_corpus on any text: registered corpora, a student's own file or folder, word or character
level, the contiguous line split, <unk> for what train lacks, and one clear error for every bad input."""
import hashlib
import os
from pathlib import Path

import pytest
import torch

from lstm_lab.data import dates, poems
from lstm_lab.data.corpus import (BOS, EOS, PAD, UNK, Corpus, Vocab, char_tokens, load_corpus, split_lines,
                                  train_vocab, word_tokens)
from lstm_lab.data.download import DataNotFoundError, files_sha256, text_files

SHARED = os.environ.get("LSTM_LAB_DATA")


def needs(corpus_file):
    return pytest.mark.skipif(not (SHARED and (Path(SHARED) / corpus_file).is_file()),
                              reason=f"needs {corpus_file} in $LSTM_LAB_DATA, the folder holding the corpora")


def numbered_text(lines=100):
    """Line k reads "the cat sat k times" (every word but k repeats); no line is like another."""
    return "".join(f"the cat sat {k} times\n" for k in range(lines))


def decoded(corpus):
    """Every split's tokens, train then valid then test, as one list."""
    return [t for split in ("train", "valid", "test") for t in corpus.vocab.decode(corpus.splits[split])]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_the_special_tokens_are_defined_once_and_importable_as_before():
    assert (PAD, BOS, EOS, UNK) == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert (poems.PAD, poems.BOS, poems.EOS, poems.UNK) == (PAD, BOS, EOS, UNK)
    assert (dates.PAD, dates.BOS, dates.EOS) == (PAD, BOS, EOS)
    assert not hasattr(poems, "pick")  # one sampler: lstm_lab.generate.sample_next


def test_a_single_text_is_split_by_lines_contiguously_and_reproducibly():
    text = numbered_text(100)
    parts = split_lines(text)
    assert list(parts) == ["train", "valid", "test"]
    assert "".join(parts.values()) == text  # contiguous, in order, covering the text
    assert [len(p.splitlines()) for p in parts.values()] == [90, 5, 5]
    assert parts["valid"].startswith("the cat sat 90 times\n") and parts["test"].startswith("the cat sat 95 times\n")
    assert split_lines(text) == parts
    assert [len(p.splitlines()) for p in split_lines(numbered_text(40)).values()] == [36, 2, 2]
    last_without_newline = text.rstrip("\n")
    assert "".join(split_lines(last_without_newline).values()) == last_without_newline


def test_a_word_level_file(tmp_path):
    text = "the cat sat\non the mat\n" * 20  # 40 lines: 36 train, 2 valid, 2 test
    corpus = load_corpus(write(tmp_path / "cats.txt", text), level="word")
    assert isinstance(corpus, Corpus) and list(corpus.splits) == ["train", "valid", "test"]
    assert decoded(corpus) == word_tokens(text)
    assert {k: v.numel() for k, v in corpus.splits.items()} == {"train": 18 * 8, "valid": 8, "test": 8}
    assert corpus.vocab.itos == ["the", "<eos>", "cat", "sat", "on", "mat"]  # no <unk>: none needed
    assert corpus.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()  # as `sha256sum cats.txt` prints
    assert corpus.description == (f"{tmp_path / 'cats.txt'} split by lines: lines 1-36 train (90%), lines 37-38 "
                                  f"valid (5%), lines 39-40 test (5%); word level, vocabulary of train: 6 tokens")


def test_a_char_level_file_keeps_every_character(tmp_path):
    text = numbered_text(60)
    corpus = load_corpus(str(write(tmp_path / "n.txt", text)), level="char")
    assert "".join(decoded(corpus)) == text  # newlines included
    assert corpus.splits["train"].numel() == len("".join(text.splitlines(keepends=True)[:54]))
    assert set(corpus.vocab.itos) == set(text)  # every digit is in train
    assert load_corpus(tmp_path / "n.txt", level="char").vocab.itos == corpus.vocab.itos  # str or Path


def test_the_split_depends_on_the_text_only(tmp_path):
    text = numbered_text(80)
    a = load_corpus(write(tmp_path / "a.txt", text))
    (tmp_path / "elsewhere").mkdir()
    b = load_corpus(write(tmp_path / "elsewhere" / "b.txt", text))
    assert a.vocab.itos == b.vocab.itos and a.sha256 == b.sha256
    assert all(torch.equal(a.splits[s], b.splits[s]) for s in a.splits)


def test_a_folder_with_split_files_uses_them(tmp_path):
    write(tmp_path / "train.txt", "a b c\nb c\n")
    write(tmp_path / "valid.txt", "c b\n")
    write(tmp_path / "test.txt", "a a\n")
    write(tmp_path / "notes.txt", "ignored when the three split files are there\n")
    corpus = load_corpus(tmp_path)
    assert corpus.vocab.decode(corpus.splits["valid"]) == ["c", "b", EOS]
    assert corpus.vocab.decode(corpus.splits["test"]) == ["a", "a", EOS]
    assert corpus.description.startswith(f"train {tmp_path / 'train.txt'}, valid {tmp_path / 'valid.txt'}, test ")
    listing = "".join(f"{hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()}  {n}\n"
                      for n in ("train.txt", "valid.txt", "test.txt"))
    assert corpus.sha256 == hashlib.sha256(listing.encode()).hexdigest()


def test_a_folder_of_texts_is_joined_in_name_order_then_split(tmp_path):
    lines = numbered_text(40).splitlines(keepends=True)
    write(tmp_path / "b.txt", "".join(lines[20:]))
    write(tmp_path / "a.txt", "".join(lines[:20]).rstrip("\n"))  # no final newline: the join adds it
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.txt", "a subfolder is not read\n")
    write(tmp_path / "d.md", "nor is a file that is not .txt\n")
    assert text_files(tmp_path) == {"text": [tmp_path / "a.txt", tmp_path / "b.txt"]}
    corpus = load_corpus(tmp_path, level="char")
    assert "".join(decoded(corpus)) == "".join(lines)
    assert corpus.description.startswith(f"the 2 .txt files of {tmp_path} joined in name order split by lines")
    before = corpus.sha256
    write(tmp_path / "b.txt", "".join(lines[20:]) + "one more line\n")
    assert load_corpus(tmp_path, level="char").sha256 != before


def test_held_out_tokens_train_lacks_read_as_unk(tmp_path):
    text = "the cat sat\n" * 37 + "the dog sat\nthe cat ran\nthe cat sat\n"  # dog in valid, ran in test
    corpus = load_corpus(write(tmp_path / "t.txt", text))
    assert corpus.vocab.itos[-1] == UNK and "dog" not in corpus.vocab.stoi
    unk = corpus.vocab.stoi[UNK]
    assert corpus.vocab.decode(corpus.splits["valid"]) == ["the", "cat", "sat", EOS, "the", UNK, "sat", EOS]
    assert corpus.splits["test"].tolist().count(unk) == 1 and unk not in corpus.splits["train"].tolist()
    assert "outside it, read as <unk>: train 0.0%, valid 12.5%, test 12.5%" in corpus.description
    chars = load_corpus(tmp_path / "t.txt", level="char")
    assert chars.vocab.itos[-1] == UNK and "g" not in chars.vocab.stoi  # d, o, g, r, n: only in valid and test


def test_max_vocab_keeps_the_most_frequent_words_and_unk(tmp_path):
    text = "".join(f"a a a b b c {k}\n" for k in range(40))  # a, b, c, <eos> frequent; 0..39 once each
    corpus = load_corpus(write(tmp_path / "t.txt", text), max_vocab=5)
    assert corpus.vocab.itos == ["a", "b", "c", EOS, UNK]
    assert corpus.vocab.decode(corpus.splits["train"][:7]) == ["a", "a", "a", "b", "b", "c", UNK]
    assert len(load_corpus(tmp_path / "t.txt", max_vocab=4).vocab) == 4
    assert train_vocab(["x", UNK, "x", "y"], max_size=2).itos == ["x", UNK]  # <unk> already there: not added twice
    assert train_vocab(["x", "y", "x"], ["x", "z"], max_size=2).itos == ["x", UNK]  # room made for <unk>
    assert train_vocab(["x", "y", "x"], ["y"]).itos == ["x", "y"]


def test_bad_input_is_one_clear_line(tmp_path):
    good = write(tmp_path / "good.txt", numbered_text(40))
    cases = [  # (argument, keyword arguments, error, message)
        (tmp_path / "missing.txt", {}, DataNotFoundError, "is neither a registered corpus .* nor an existing file"),
        (write(tmp_path / "empty.txt", ""), {}, ValueError, "empty.txt is empty: expected a file with some text"),
        (write(tmp_path / "blank.txt", " \n\n\t\n"), {}, ValueError, "blank.txt is empty"),
        (good, {"level": "byte"}, ValueError, "unknown level 'byte'; choose one of: word, char"),
        (tmp_path / "missing.txt", {"level": "byte"}, ValueError, "unknown level"),  # checked before the path
        (good, {"max_vocab": 1}, ValueError, "max_vocab must be at least 2"),
        (write(tmp_path / "short.txt", numbered_text(10)), {}, ValueError,  # 10 lines: 9 train, 0 valid, 1 test
         r"short.txt split by lines: .* is too short: its splits hold train 54, valid 0, test 6 tokens, "
         r"expected at least 2 in each \(a single text needs at least 11 lines"),
        (write(tmp_path / "one_line.txt", "a long line " * 100), {"level": "char"}, ValueError, "too short"),
    ]
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    cases.append((tmp_path / "picture.png", {}, ValueError, r"picture.png is not UTF-8 text \(byte 0x89 at offset 0\)"))
    (tmp_path / "nul.txt").write_bytes(b"text\x00with\x00nul bytes\n" * 40)
    cases.append((tmp_path / "nul.txt", {}, ValueError, "nul.txt holds NUL bytes, so it is a binary file"))
    (tmp_path / "no_texts").mkdir()
    write(tmp_path / "no_texts" / "readme.md", "not a .txt\n")
    cases.append((tmp_path / "no_texts", {}, DataNotFoundError, "no_texts holds no .txt file"))
    (tmp_path / "partial").mkdir()
    write(tmp_path / "partial" / "train.txt", numbered_text(10))
    write(tmp_path / "partial" / "valid.txt", numbered_text(10))
    cases.append((tmp_path / "partial", {}, ValueError, "holds train.txt and valid.txt but no test.txt: expected all"))
    (tmp_path / "tiny_splits").mkdir()
    for name, words in (("train.txt", "a b\n"), ("valid.txt", "a"), ("test.txt", "b a\n")):
        write(tmp_path / "tiny_splits" / name, words)
    cases.append((tmp_path / "tiny_splits", {"level": "char"}, ValueError,
                  "too short: its splits hold train 4, valid 1, test 4 tokens"))
    for argument, kwargs, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            load_corpus(argument, **kwargs)
        assert "\n" not in str(caught.value), str(caught.value)
    with pytest.raises(DataNotFoundError, match="ptb, wikitext-2, tang, tinyshakespeare"):
        load_corpus("penn")


@needs("ptb/train.txt")
def test_ptb_reads_as_before():
    corpus = load_corpus("ptb", allow_download=False, progress=False)
    train = word_tokens((Path(SHARED) / "ptb" / "train.txt").read_text("utf-8"))
    vocab = Vocab.build(train)  # the recipe the recorded results were trained with
    assert corpus.vocab.itos == vocab.itos and len(vocab) == 10_000
    assert torch.equal(corpus.splits["train"], vocab.encode(train))
    for split in ("valid", "test"):
        assert torch.equal(corpus.splits[split], vocab.encode(word_tokens(
            (Path(SHARED) / "ptb" / f"{split}.txt").read_text("utf-8"))))


@needs("wikitext-2/train.txt")
def test_wikitext2_every_held_out_word_is_in_the_train_vocabulary():
    corpus = load_corpus("wikitext-2", allow_download=False, progress=False)
    assert len(corpus.vocab) == 33_278
    assert {k: v.numel() for k, v in corpus.splits.items()} == {"train": 2_088_628, "valid": 217_646,
                                                                 "test": 245_569}
    for split in ("valid", "test"):  # encoding without <unk> fallback raises on any unknown word
        text = (Path(SHARED) / "wikitext-2" / f"{split}.txt").read_text("utf-8")
        assert torch.equal(corpus.vocab.encode(word_tokens(text)), corpus.splits[split])
    assert "outside it" not in corpus.description


@needs("tinyshakespeare/input.txt")
def test_tiny_shakespeare_characters_split_90_5_5_by_lines():
    corpus = load_corpus("tinyshakespeare", level="char", allow_download=False, progress=False)
    text = (Path(SHARED) / "tinyshakespeare" / "input.txt").read_text("utf-8")
    assert len(corpus.vocab) == 65 and UNK not in corpus.vocab.stoi
    assert {k: v.numel() for k, v in corpus.splits.items()} == {"train": 1_016_242, "valid": 51_726, "test": 47_426}
    assert "".join(decoded(corpus)) == text
    assert corpus.description.startswith("tinyshakespeare/input.txt split by lines: lines 1-36,000 train (90%), "
                                         "lines 36,001-38,000 valid (5%), lines 38,001-40,000 test (5%); char level")
    assert corpus.sha256 == files_sha256([Path(SHARED) / "tinyshakespeare" / "input.txt"]) == \
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert char_tokens(text[:5]) == list("First")
