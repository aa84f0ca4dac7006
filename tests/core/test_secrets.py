"""Passwords in storage URLs, whatever characters they hold."""

import pytest

from codemix.core.secrets import normalise, redact, scrub, split_credentials

URLS = [
    ("postgresql://me:p@ss@db:5432/x", "p@ss"),
    ("postgresql://me:p:ss@db/x", "p:ss"),
    ("postgresql://me:pa/ss@db/x", "pa/ss"),
    ("postgresql://me:s3cr%t@db:5432/x", "s3cr%t"),
    ("postgresql://me:a%40b%2Fc@db/x", "a%40b%2Fc"),
]


@pytest.mark.parametrize(("url", "password"), URLS)
def test_the_whole_password_is_found_and_hidden(url, password):
    assert split_credentials(url)[2] == password
    shown = redact(url)
    assert shown.startswith("postgresql://me:***@db") and shown.endswith("/x")
    assert password not in shown


def test_urls_without_a_password_are_left_alone():
    for url in ("sqlite:///a/b.db", "sqlite:////tmp/a@b/x.db", "postgresql://me@db/x"):
        assert redact(url) == url and normalise(url) == url


def test_error_messages_lose_every_form_of_the_password():
    url = "postgresql://me:a@b/c@db/x"
    text = "could not connect as me with a@b/c (a%40b%2Fc) to db"
    assert "a@b/c" not in scrub(text, url) and "a%40b%2Fc" not in scrub(text, url)


def test_a_short_password_is_masked_where_it_stands_alone_only():
    url = "postgresql://u:p@localhost:1/x"
    text = 'psycopg.OperationalError: port 1 failed for "u:p@localhost", password p rejected'
    assert scrub(text, url) == (
        'psycopg.OperationalError: port 1 failed for "u:***@localhost", password *** rejected'
    )


def test_normalise_escapes_the_password_once():
    assert normalise("postgresql://me:p@ss@db/x") == "postgresql://me:p%40ss@db/x"
    assert normalise("postgresql://me:p%40ss@db/x") == "postgresql://me:p%40ss@db/x"
