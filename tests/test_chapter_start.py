"""lstm_lab.book.chapter: every chapter starts by saying how long it took on a CPU and on a GPU when it was last
recorded, and on a Colab runtime without a GPU how to get one."""
import torch

import lstm_lab.book.chapter as chapter

CPU = {"cpu_count": 2, "notebooks": [
    {"notebook": "chapters/03_step_by_step.ipynb", "status": "ok", "seconds": 69.5, "device": "cpu (Xeon)",
     "date": "2026-12-02T10:50:00+00:00", "commit": "18dea4d0123"},
    {"notebook": "chapters/06_language_model.ipynb", "status": "error", "seconds": 3.0, "device": "cpu (Xeon)",
     "date": "2026-12-02T10:50:00+00:00", "commit": "18dea4d0123"}]}
GPU = {"cpu_count": 16, "notebooks": [
    {"notebook": "chapters/03_step_by_step.ipynb", "status": "ok", "seconds": 481.5, "device": "cuda (H100)",
     "date": "2026-11-23T08:00:00+00:00", "commit": "f2ebbd17fae"}]}


def fake_records(monkeypatch, records):
    monkeypatch.setattr(chapter, "load_recorded", lambda name: records.get(name))


def test_the_line_names_both_recorded_runs_with_their_date_and_commit(monkeypatch):
    fake_records(monkeypatch, {"chapters-cpu.json": CPU, "chapters-gpu.json": GPU})
    line = chapter.expectation("03_step_by_step", torch.device("cpu"))
    assert line == ("This chapter, run top to bottom: 70 s on a CPU (cpu (Xeon), 2 cores; run 2026-12-02, commit "
                    "18dea4d); 8.0 min on a GPU (cuda (H100); run 2026-11-23 with older code, commit f2ebbd1).")


def test_a_chapter_not_recorded_or_that_failed_says_so(monkeypatch):
    fake_records(monkeypatch, {"chapters-cpu.json": CPU})
    line = chapter.expectation("06_language_model", torch.device("cpu"))
    assert line == "This chapter, run top to bottom: not yet recorded on a CPU; not yet recorded on a GPU."


def test_a_colab_cpu_runtime_is_told_how_to_get_a_gpu(monkeypatch, capsys):
    fake_records(monkeypatch, {})
    assert "Change runtime type" in chapter.expectation("03_step_by_step", torch.device("cpu"), colab=True)
    assert "Change runtime type" not in chapter.expectation("03_step_by_step", torch.device("cpu"))
    monkeypatch.setitem(__import__("sys").modules, "google.colab", object())
    device = chapter.start_chapter("03_step_by_step", seed=0, prefer="cpu")
    printed = capsys.readouterr().out.splitlines()
    assert device == torch.device("cpu") and printed[0].startswith("torch ") and "Change runtime type" in printed[1]



def test_a_chapter_on_a_cpu_uses_one_thread_unless_asked_otherwise(monkeypatch, capsys):
    fake_records(monkeypatch, {})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        chapter.start_chapter("03_step_by_step", seed=0, prefer="cpu")
        assert torch.get_num_threads() == 1 and "(1 CPU thread)" in capsys.readouterr().out
        torch.set_num_threads(2)
        chapter.start_chapter("03_step_by_step", seed=0, prefer="cpu", threads=None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
