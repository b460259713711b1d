"""A Sphinx extension for the book build: after the build, one line per executed page with its wall time and the
chapter budget, so the build log shows what each chapter cost (`tests/test_built_notebooks.py` then fails a page
over budget, and `appendix/runtimes.md` shows the same table in the book).

    sphinx: config: extensions: [..., lstm_lab.book.build_times]      (in _config.yml)

The times are myst-nb's own (`env.nb_metadata[docname]["exec_data"]["runtime"]`, seconds), measured where the
book is built.  Shown in the appendix "How long each page runs".
"""
from lstm_lab.book.chapter import BUDGETS

__all__ = ["execution_times"]


def execution_times(env):
    """{docname: seconds} of every page the build executed (myst-nb's record in the Sphinx environment): the
    build's measure of how long each chapter takes (chapter 1's first cell prints the recorded ones)."""
    metadata = getattr(env, "nb_metadata", {})
    return {docname: data["exec_data"]["runtime"] for docname, data in sorted(metadata.items())
            if data.get("exec_data") and data["exec_data"].get("runtime") is not None}


def report_times(app, exception):
    """Print each executed page's wall time against the CPU budget, at the end of a build that executed pages."""
    if exception is not None:
        return
    times = execution_times(app.env)
    for docname, seconds in times.items():
        mark = "" if seconds <= BUDGETS["CPU"] else f"  OVER the {BUDGETS['CPU']} s budget"
        print(f"executed {docname}: {seconds:.1f} s{mark}", flush=True)
    if times:
        print(f"executed {len(times)} pages in {sum(times.values()) / 60:.1f} min", flush=True)


def setup(app):
    app.connect("build-finished", report_times)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
