"""LSTM Lab: the LSTM from its gate equations to a trained language model.

The package behind the LSTM Lab book.  Each module holds one concept (the chapter that introduces it):

    init        every initialisation: PyTorch's, Zaremba's, the forget-gate bias            (1, 2, 6)
    cells       LSTMCell (drop-in for nn.LSTMCell) and the two teaching notations           (1)
    lstm        LSTM (drop-in for nn.LSTM: bidirectional, packed), input projection hoisted (1)
    widgets     the gate explorer: what the cell state remembers                            (1)
    numpy_lstm  a numpy LSTM with a hand-written backward pass and a gradient checker       (2)
    reference   nn.LSTM as the ground truth: autograd gradients of a numpy problem          (2)
    gradflow    gradient norms through time: tanh RNN vs LSTM, forget-gate bias             (2)
    ladder      nine LSTMs of increasing speed, each the same function as nn.LSTM           (3)
    timing      fair timing (warm-up, synchronisation, interleaving) and small speed checks (3)
    bench       the speed-ladder benchmark and its command line                             (3)
    epoch_time  report 000's training loop, one fix at a time, and its epoch time projected (3)
    provenance  device, versions, commit, command and date of a recorded result             (3)
    records     the recorded results the chapters show, and their tables and summaries    (3, 5, 6, 8, 9)
    clinic      the autograd errors reproduced, explained and fixed                         (4)
    depth       stacked LSTMs: parameter counts, tied layers, the depth study               (5)
    manifest    pinned data files: paths, sizes, sha256, upstream URLs                      (6)
    files       atomic writes, file locks, sha256                                           (6)
    data        finding, downloading and checking the corpora; your own text files          (6)
    corpus      special tokens, vocabularies, train/valid/test of any text, batchify, BPTT  (6)
    config      model and training configurations, Zaremba's presets                        (6)
    model       LanguageModel: embedding, LSTM, decoder, dropout, weight tying              (6)
    train       the one training loop every model uses: train_epoch, fit, run state        (6, 8, 9)
    lm_train    the language model's part: windows, WindowStep, Zaremba's schedule, evaluate (6, 7)
    distributed torchrun ranks, each rank's share of the streams, DDP wrapping              (7)
    compiling   how often torch.compile compiles an LSTM: one graph per sequence length     (3, 7)
    packing     padded vs packed batches: the last state padding corrupts, their speed      (7)
    throughput  training words per second: nn.LSTM, the book's LSTM, compiled, graphed, AMP (7)
    checkpoint  one checkpoint format for every model: a dict plus config.json              (6)
    runs        run folders for every model: recorder, lock, resume, reading back           (6, 8, 9)
    generate    the one sampler (temperature, top-k, banned tokens) and text generation     (6, 8)
    poems       Tang poems: split, forms, masked loss, packed model, poems to a form        (8)
    poems_train  the poem model's part of the loop: masked-loss step, PoemsTask, optimizers (8)
    poems_study  the optimizer and initialisation studies: learning-rate search, tables     (8)
    dates       the date-normalisation task: formats, splits, vocabularies, batches         (9)
    seq2seq     packed bidirectional encoder, Luong attention, LSTMCell decoder, beam       (9)
    seq2seq_train  the date translator's part of the loop: DatesTask, accuracy, decoding   (9)
    cli         python -m lstm_lab train | evaluate | generate | poems | dates | bench    (6, 8, 9)
    plots       the matplotlib figures the chapters draw
    runtime     device choice, seeding, mixed-precision (autocast, GradScaler) settings
    show        showing the package's own source and tables in a chapter
"""
from lstm_lab.cells import LSTMCell, GateLSTMCell, ConcatLSTMCell, fused_to_concat, concat_to_fused
from lstm_lab.lstm import LSTM, lstm_layer

__version__ = "0.1.0"

__all__ = ["LSTMCell", "GateLSTMCell", "ConcatLSTMCell", "fused_to_concat", "concat_to_fused", "LSTM", "lstm_layer"]
