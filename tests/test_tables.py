"""The one Markdown table renderer, as the comparison, benchmark and demo tables use it."""

from grape_instances.core.tables import markdown_table
from grape_instances.experiments.benchmark import format_table
from grape_instances.experiments.demo import format_ap_table


def test_cells_are_kept_as_formatted_and_columns_aligned():
    table = markdown_table(["model", "MAE"], [["UNet", "1.00"], ["FCN-8s", "12.50"]],
                           ["left", "right"]).splitlines()
    assert table == [
        "| model   |   MAE |",
        "|:--------|------:|",
        "| UNet    |  1.00 |",  # not re-parsed into "1"
        "| FCN-8s  | 12.50 |",
    ]


def test_project_tables_go_through_it():
    rows = [{"model": "a", "params_m": 1.25}, {"model": "bb", "params_m": 10.0}]
    assert format_table(rows, [("model", "model", "s"), ("params_m", "params (M)", ".1f")]) == (
        markdown_table(["model", "params (M)"], [["a", "1.2"], ["bb", "10.0"]],
                       ["left", "right"]))
    ap = format_ap_table({"segm": {"AP": 45.94, "AP50": 83.3, "AP75": 48.2}}).splitlines()
    assert ap[0].split("|")[1:-1] == [" task   ", "   AP ", "   AP50 ", "   AP75 "]
    assert ap[2].split("|")[2].strip() == "nan" and ap[3].split("|")[2].strip() == "45.9"
