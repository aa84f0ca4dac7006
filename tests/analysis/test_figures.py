import pytest

from codemix.analysis.figures import INK, NEUTRAL, axis, axis_title, size_colours, unit


def test_sizes_get_distinct_colours_that_are_not_the_targets():
    colours = size_colours([str(i) for i in range(12)]).values()
    assert len(set(colours)) == 12
    assert not {INK, NEUTRAL} & set(colours)
    assert size_colours(["1M", "4M"])["1M"] == size_colours(["1M", "4M", "8M"])["1M"]


@pytest.mark.parametrize(
    ("col", "role", "title"),
    [
        ("code_frac.init", None, "code share of stage init (%)"),
        ("param.stages.cooldown.code_frac", None, "searched code share of stage cooldown (%)"),
        ("mix.init.hq_code", None, "share of hq_code in stage init (%)"),
        ("bpb.text", "NL", "NL bpb.text (bits per byte)"),
        ("loss.code", None, "loss.code (nats per token)"),
        ("task.nl_reasoning.acc", None, "task.nl_reasoning.acc (fraction correct)"),
        ("task.code.bpb", None, "task.code.bpb (bits per byte)"),
        ("predicted_bpb.code", "code", "predicted code bpb.code (bits per byte)"),
        ("params", None, "parameters (total, with embeddings)"),
        ("non_embedding_params", None, "parameters (non-embedding)"),
        ("tokens", None, "training tokens (count)"),
        ("epochs.code", None, "epochs of code (passes over its tokens)"),
    ],
)
def test_axis_titles_name_the_metric_and_its_unit(col, role, title):
    assert axis_title(col, role) == title


def test_units_and_percent_axes():
    assert unit("bpb.text") == "bits per byte" and unit("task.code.acc") == "fraction correct"
    assert axis("code_frac.init")["tickformat"] == ".0%"
    assert "tickformat" not in axis("bpb.text")
