import pytest

from codemix.core.errors import CodemixError
from codemix.proxy_train.spec import apply_overrides, load_spec, val_windows

GOOD = """
[data]
store = "somewhere"
[model]
size = "test"
[train]
seq_len = 32
batch_size = 4
lr_peak = 1
[[stages]]
name = "init"
tokens = "10k"
mixture = { text = 0.5, code = 0.5 }
lr = { shape = "cosine", warmup = 0.1 }
[[stages]]
name = "cooldown"
tokens = 2000
mixture = { text = 0.8, code = 0.2 }
lr = { shape = "linear", start = "continue", end_lr = 1e-6 }
"""


def _write(tmp_path, text):
    (tmp_path / "s.toml").write_text(text)
    return tmp_path / "s.toml"


def test_loads_a_good_spec(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.size == "test" and spec.train.lr_peak == 1.0
    assert [s.name for s in spec.schedule.stages] == ["init", "cooldown"]
    assert spec.schedule.stages[1].lr.end_lr == 1e-6


def test_a_wsd_stage_from_toml(tmp_path):
    text = GOOD.replace(
        'lr = { shape = "cosine", warmup = 0.1 }',
        'lr = { shape = "wsd", warmup = 0.01, decay = 0.25, decay_shape = "linear", end = 0.0 }',
    )
    lr = load_spec(_write(tmp_path, text)).schedule.stages[0].lr
    assert (lr.shape, lr.decay, lr.decay_shape) == ("wsd", 0.25, "linear")
    with pytest.raises(CodemixError, match="stage 'init'.*lr.decay 2.0"):
        load_spec(_write(tmp_path, text.replace("decay = 0.25", "decay = 2.0")))


def test_overrides_by_stage_name_and_index(tmp_path):
    spec = load_spec(
        _write(tmp_path, GOOD),
        [
            "stages.cooldown.mixture.code=0.3",
            "stages.cooldown.mixture.text=0.7",
            "stages.0.tokens=20k",
            "train.lr_peak=1e-3",
            "model.size=1M",
        ],
    )
    assert spec.schedule.stages[1].mixture == {"text": 0.7, "code": 0.3}
    assert spec.schedule.stages[0].tokens == "20k"
    assert spec.train.lr_peak == 1e-3 and spec.size == "1M"


def test_override_raw_is_not_mutated():
    raw = {"train": {"seed": 1}}
    assert apply_overrides(raw, ["train.seed=2"])["train"]["seed"] == 2
    assert raw["train"]["seed"] == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("lr_peak = 1", "lr_peek = 1"), r"unknown key \[train\]\.lr_peek"),
        (lambda t: t.replace("batch_size = 4", 'batch_size = "4"'), r"batch_size: expected an int"),
        (
            lambda t: t.replace("code = 0.2", "code = 0.3"),
            r"'cooldown': mixture weights sum to 1.1",
        ),
        (lambda t: t.replace('tokens = "10k"', "tokens = 0"), "'init': tokens = 0"),
        (lambda t: t.replace('shape = "cosine"', 'shape = "cosin"'), "lr.shape 'cosin'"),
        (lambda t: t.replace("[model]\nsize", "[model]\nwidth"), r"\[model\] needs size"),
        (lambda t: t.replace("store =", "stor ="), r"\[data\] needs store"),
        (lambda t: t + "\n[[stages]]\nname = 'x'\nmixture = 3\n", "needs mixture ="),
        (
            lambda t: t + "\n[[stages]]\nname = 'x'\ntokens = 1\nmixture = {a=1}\nwarm = 1\n",
            "unknown key 'warm'",
        ),
        (lambda t: t + "\n[[[oops", "not valid TOML"),
    ],
)
def test_bad_specs_name_file_and_key(tmp_path, edit, message):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(CodemixError, match=message) as e:
        load_spec(path)
    assert "s.toml" in str(e.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr_peak", "expected KEY=VALUE"),
        ("stages.warmup.tokens=1", "no stage 'warmup'"),
        ("nothing.x=1", r"no table \[nothing\]"),
    ],
)
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(CodemixError, match=message):
        load_spec(_write(tmp_path, GOOD), [override])


def test_missing_file(tmp_path):
    with pytest.raises(CodemixError, match="no such spec file"):
        load_spec(tmp_path / "nope.toml")


def test_code_frac_builds_the_mixture_from_groups(tmp_path):
    text = GOOD.replace("mixture = { text = 0.5, code = 0.5 }", "code_frac = 0.25")
    text += "\n[groups]\ncode = { code = 0.8, web = 0.2 }\ntext = { text = 1.0 }\n"
    spec = load_spec(_write(tmp_path, text))
    mix = spec.schedule.stages[0].mixture
    assert mix["code"] == pytest.approx(0.2) and mix["web"] == pytest.approx(0.05)
    assert mix["text"] == pytest.approx(0.75)
    with pytest.raises(CodemixError, match="code_frac = 1.5"):
        load_spec(_write(tmp_path, text), ["stages.init.code_frac=1.5"])
    with pytest.raises(CodemixError, match="group 'code': mixture weights sum to 0.9"):
        load_spec(_write(tmp_path, text), ["groups.code.web=0.1"])


def test_unique_tokens_parse_counts_and_refuse_bad_values():
    from codemix.proxy_train.spec import TrainSettings

    settings = TrainSettings(unique_tokens={"text": "2M", "code": 5000})
    assert settings.unique_tokens == (("code", 5000), ("text", 2_000_000))
    hash(settings)  # settings are static arguments of compiled steps
    with pytest.raises(CodemixError, match=r"train.unique_tokens.text.*cannot read"):
        TrainSettings(unique_tokens={"text": "lots"})
    with pytest.raises(CodemixError, match="train.unique_tokens.code = 0: must be >= 1"):
        TrainSettings(unique_tokens={"code": 0})
    with pytest.raises(CodemixError, match="a table of domain = tokens"):
        TrainSettings(unique_tokens="2M")


def test_unique_share_caps_each_run_at_a_share_of_its_tokens(tmp_path):
    from codemix.proxy_train.spec import TrainSettings

    settings = TrainSettings(unique_tokens={"code": 5000}, unique_share={"text": 0.02})
    assert settings.unique_share == (("text", 0.02),)
    hash(settings)
    assert settings.caps(1_000_000) == {"code": 5000, "text": 20_000}
    assert settings.caps(10) == {"code": 5000, "text": 1}  # never an empty sample
    assert TrainSettings().caps(1000) == {}
    for bad in (0, 1.5, "2%", True):
        with pytest.raises(CodemixError, match=r"train.unique_share.text = .*must be in \(0, 1\]"):
            TrainSettings(unique_share={"text": bad})
    with pytest.raises(CodemixError, match=r"both cap \['text'\]: give one"):
        TrainSettings(unique_tokens={"text": "2M"}, unique_share={"text": 0.02})
    with pytest.raises(CodemixError, match="a table of domain = share"):
        TrainSettings(unique_share=0.02)
    # from a spec file, and from --set
    spec = load_spec(_write(tmp_path, GOOD), ["train.unique_share={text=0.05}"])
    assert spec.train.unique_share == (("text", 0.05),)


def test_val_windows_reads_what_is_asked_or_the_whole_split():
    assert val_windows(10_000, 256, 1024) == 4  # asked for, and the split holds more
    assert val_windows(1000, 256, 65536) == 3  # the split holds 999 tokens past the first
    assert val_windows(257, 256, 65536) == 1  # one window needs seq_len + 1 tokens
    assert val_windows(256, 256, 65536) == 0  # `check_val_windows` refuses this split
    assert val_windows(10_000, 256, 10) == 1  # at least one window, however few tokens asked
