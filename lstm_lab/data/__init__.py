"""The data the book's models read: pinned corpora, your own text, the Tang poems and the generated dates.

    manifest    pinned data files: paths, sizes, sha256, upstream URLs                      (6)
    download    finding, downloading and checking the corpora; your own text files          (6)
    corpus      special tokens, vocabularies, train/valid/test of any text, batchify, BPTT  (6)
    poems       the Tang poem corpus: split, forms, vocabulary, padded and bucketed batches (8)
    dates       the date-normalisation task: formats, splits, vocabularies, batches         (9)

These modules import only the package's foundation (`lstm_lab.config`, `lstm_lab.files`) and each other: the
models and the training loop import them, never the other way round.
"""
