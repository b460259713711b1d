"""What the chapters need to show things: figures, the interactive gate explorer, source and tables.

    plots       the matplotlib figures the chapters draw
    widgets     the gate explorer: what the cell state remembers                            (1)
    show        showing the package's own source and tables in a chapter

Nothing else in the package imports these.
"""
