"""The display helpers chapters use to show package code, tables and the API reference."""
import lstm_lab.cells
from lstm_lab.book.show import declaration, module_reference, public_members, show_source, show_table
from lstm_lab.cells import cell_update
from lstm_lab.experiments.ladder import CPP_SOURCE


def test_show_source_is_the_package_source_as_python():
    text = show_source(cell_update).data
    assert text.startswith("```python\ndef cell_update(gates, c):")
    assert "c_new = f * c + i * g" in text and text.endswith("\n```")


def test_show_source_of_a_file_is_its_whole_text_highlighted_by_suffix():
    text = show_source(CPP_SOURCE).data
    assert text.startswith("```cpp\n// One LSTM step's elementwise work")
    assert "void backward_step(" in text and text.endswith("}\n```")


def test_show_table_formats_dicts_and_floats():
    text = show_table([{"name": "a", "error": 1.23456e-11}, {"name": "b", "error": 0.5}]).data
    assert text.splitlines() == ["| name | error |", "|---|---|", "| a | 1.23e-11 |", "| b | 0.5 |"]


def test_public_members_are_the_module_own_and_not_private():
    names = [name for name, _ in public_members(lstm_lab.cells)]
    assert "LSTMCell" in names and "cell_update" in names
    assert "_Cell" not in names and "_as_batch" not in names
    assert "nn" not in names and "F" not in names  # imported, not defined there


def test_api_reference_lists_signatures_and_docstrings():
    text = module_reference(lstm_lab.cells).data
    assert text.startswith("```text\nLSTM cells in PyTorch")  # the module's docstring first
    assert "def cell_update(gates, c)" in text and "class LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None)" in text
    assert declaration("Oops", type("Oops", (ValueError,), {})) == "class Oops(ValueError)"


def test_show_table_escapes_what_markdown_would_swallow():
    text = show_table([{"max |h|": "becomes <unk>", "pattern": "`a|b<c`"}]).data
    header, _, row = text.splitlines()
    assert header == r"| max \|h\| | pattern |"
    assert row == r"| becomes \<unk> | `a\|b<c` |"
