"""The book's experiments: the measurements and studies the chapters run on the core, and their recorded results.

    ladder      nine LSTMs of increasing speed, each the same function as nn.LSTM           (3)
    timing      fair timing (warm-up, synchronisation, interleaving) and small speed checks (3)
    bench       the speed-ladder benchmark (`python -m lstm_lab bench`)                     (3)
    epoch_time  report 000's training loop, one fix at a time, and its epoch time projected (3)
    compiling   how often torch.compile compiles an LSTM: one graph per sequence length     (3, 7)
    gradflow    gradient norms through time: tanh RNN vs LSTM, forget-gate bias             (1, 2, 5)
    clinic      the autograd errors reproduced, explained and fixed                         (4)
    depth       stacked LSTMs: parameter counts and the depth study                         (5)
    packing     padded vs packed batches: the last state padding corrupts, their speed      (7)
    throughput  training words per second: nn.LSTM, the book's LSTM, compiled, graphed, AMP (7)
    poems_study the optimizer and initialisation studies: learning-rate search, tables     (8)
    records     the recorded results the chapters show, and their tables and summaries      (3, 5, 6, 8, 9)

They import the core (`lstm_lab.*`) and the data (`lstm_lab.data.*`); nothing in the core imports them.  Read
them to see how a result was measured; copy from the core.
"""
