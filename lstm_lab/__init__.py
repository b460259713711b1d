"""LSTM Lab: the LSTM from its gate equations to a trained language model.

The package behind the LSTM Lab book.  Each module holds one concept:

    cells       LSTMCell (drop-in for nn.LSTMCell) and the two teaching notations
    lstm        LSTM (drop-in for unidirectional nn.LSTM), input projection hoisted
    numpy_lstm  a numpy LSTM with a hand-written backward pass and a gradient checker
    runtime     device choice and seeding
"""
from lstm_lab.cells import LSTMCell, GateLSTMCell, ConcatLSTMCell, fused_to_concat, concat_to_fused
from lstm_lab.lstm import LSTM, lstm_layer

__version__ = "0.1.0"
