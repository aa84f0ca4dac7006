import pytest

STUDY = """
[data]
store = "{store}"
[model]
size = "test"
[train]
seq_len = 32
batch_size = 4
eval_tokens = 64
lr_peak = 3e-3
[[stages]]
name = "init"
tokens_per_param = 10
code_frac = 0.25
[[stages]]
name = "cooldown"
tokens_per_param = 2
code_frac = 0.2
lr = {{ shape = "linear", start = "continue", end_lr = 1e-6 }}
[study]
name = "{name}"
sampler = "{sampler}"
n_trials = {n}
sizes = {sizes}
max_tokens = {max_tokens}
population = {population}
heartbeat_seconds = 1
grace_seconds = 4
out = "{out}"
{study_extra}
[search]
{search}
[[objectives]]
metric = "bpb.text"
"""

SEARCH = '"stages.init.code_frac" = { low = 0.0, high = 1.0 }'


@pytest.fixture
def write_study(small_store, tmp_path):
    def write(
        name="s",
        sampler="random",
        n=3,
        sizes='["test"]',
        max_tokens=640,
        population=2,
        search=SEARCH,
        extra="",
        study_extra="",
        store=None,
    ):
        text = (
            STUDY.format(
                store=store or small_store,
                name=name,
                sampler=sampler,
                n=n,
                sizes=sizes,
                max_tokens=max_tokens,
                population=population,
                search=search,
                out=tmp_path / "runs" / name,
                study_extra=study_extra,
            )
            + extra
        )
        if n is None:  # the spec's default
            text = text.replace("n_trials = None\n", "")
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path

    return write
