"""LSTM Lab: the LSTM from its gate equations to a trained language model.

The package behind the LSTM Lab book.  Each module holds one concept (the chapters that introduce it).  The
folder a module lives in says what it is for:

lstm_lab/ -- the core: the models and the training a student copies from
    runtime     device choice, seeding, mixed-precision (autocast, GradScaler), CUDA-graph capture
    files       atomic writes, file locks, sha256                                           (6)
    config      model and training configurations, Zaremba's presets                        (6)
    provenance  device, versions, commit, command and date of a recorded result             (3)
    init        every initialisation: PyTorch's, Zaremba's, the forget-gate bias            (1, 2, 6)
    cells       LSTMCell (drop-in for nn.LSTMCell) and the two teaching notations           (1)
    lstm        LSTM (drop-in for nn.LSTM: bidirectional, packed), input projection hoisted (1)
    numpy_lstm  a numpy LSTM with a hand-written backward pass and a gradient checker       (2)
    reference   nn.LSTM as the ground truth: autograd gradients of a numpy problem          (2)
    model       LanguageModel: embedding, LSTM, decoder, dropout, weight tying; tied layers (5, 6)
    poem_model  PoemLM over packed batches, the masked loss, poems generated to a form      (8)
    seq2seq     packed bidirectional encoder, Luong attention, LSTMCell decoder, beam       (9)
    generate    the one sampler (temperature, top-k, banned tokens) and text generation     (6, 8)
    train       the one training loop every model uses: train_epoch, fit, run state        (6, 8, 9)
    checkpoint  one checkpoint format for every model: a dict plus config.json              (6)
    runs        run folders for every model: recorder, lock, resume, reading back           (6, 8, 9)
    distributed torchrun ranks, each rank's share of the streams, DDP wrapping              (7)
    lm_train    the language model's part of the loop: windows, WindowStep, evaluate        (6, 7)
    poems_train the poem model's part of the loop: masked-loss step, PoemsTask, optimizers (8)
    seq2seq_train  the date translator's part of the loop: DatesTask, accuracy, decoding   (9)
lstm_lab/data/ -- the corpora, your own text, the poems and the dates (see its __init__)
lstm_lab/experiments/ -- the book's measurements and studies, and their recorded results (see its __init__)
lstm_lab/check/ -- coursework checks: a student's cell, LSTM, backward pass or training loop against the reference,
    the likely bug named with the chapter that explains it (see its __init__)
lstm_lab/book/ -- figures, widgets, showing source and tables in a chapter (see its __init__)
lstm_lab/cli.py -- python -m lstm_lab train | evaluate | generate | poems | dates | bench  (6, 8, 9)

Imports flow one way: cli -> book -> check -> experiments -> the core's training and models -> data -> the foundation
(runtime, files, config, provenance); tests/test_layout.py holds the order and fails on a wrong-way import.
"""
from lstm_lab.cells import LSTMCell, GateLSTMCell, ConcatLSTMCell, fused_to_concat, concat_to_fused
from lstm_lab.lstm import LSTM, lstm_layer

__version__ = "0.1.0"

__all__ = ["LSTMCell", "GateLSTMCell", "ConcatLSTMCell", "fused_to_concat", "concat_to_fused", "LSTM", "lstm_layer"]
