import pytest

from codemix.core.errors import CodemixError
from codemix.optimizer.storage import default_url, open_storage, redact


def test_redact():
    assert redact("postgresql://me:s3cr%t@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_default_is_sqlite_beside_the_spec(tmp_path):
    assert default_url(tmp_path / "q.toml") == f"sqlite:///{tmp_path / 'q.db'}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "expected sqlite:///PATH"),
        ("sqlite:////nonexistent/dir/x.db", "folder /nonexistent/dir does not exist"),
        ("journal:/nonexistent/dir/j.log", "folder /nonexistent/dir does not exist"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(CodemixError, match=message):
        open_storage(url)


@pytest.mark.parametrize("scheme", ["sqlite:///", "journal:"])
def test_a_reader_leaves_no_file_behind(tmp_path, scheme):
    path = tmp_path / "typo.db"
    with pytest.raises(CodemixError, match="no file"):
        open_storage(f"{scheme}{path}", existing=True)
    assert not path.exists()
    open_storage(f"{scheme}{path}")  # a writer creates it


def test_unreachable_server_hides_the_password():
    with pytest.raises(CodemixError, match="unreachable") as e:
        open_storage("postgresql://me:topsecret@127.0.0.1:1/db")
    assert "topsecret" not in str(e.value)
