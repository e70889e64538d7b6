"""The URL rule as a pure function: every problem it names, what it lets through, and its fast path."""

from __future__ import annotations

import ast
import inspect

import pytest

from network_policy import urls
from network_policy.urls import MAX_URL_LENGTH, UrlProblem, url_host, url_problem

ACCEPTED = [
    "https://img.example.com/a.jpg",
    "HTTPS://IMG.EXAMPLE.COM/A.JPG",
    "http://a",
    "http://a.b:1/",
    "http://a.b:65535/x",
    "http://a.b:00080/x",
    "http://127.0.0.1:8080/x?y#z",
    "http://a.b?x",
    "http://a.b#x",
    "http://a.b/[x]@y:z",
    "http://a.b/%zz",
    "https://a.b/x\u00e9",
    "http://a_b/",
    "http://-a.b/x",
    "http://a..b/x",
    "http://b\u00fccher.example/x.jpg",
    "http://[::1]:8080/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[::1%25lo]/x",
    "http://127.0.0.1./x",
    "http://2130706433/x",
]

REFUSED = [
    ("", "empty"),
    ("https://img.example.com/a b.jpg", "bad_character"),
    (" https://img.example.com/a.jpg", "bad_character"),
    ("https://img.example.com/a.jpg\t", "bad_character"),
    ("https://img.example.com/a\x00.jpg", "bad_character"),
    ("https://img.example.com/a\x7f.jpg", "bad_character"),
    ("https://img.example.com/a\x9f.jpg", "bad_character"),
    ("http://a.b/\u2028", "bad_character"),
    ("http://[::1/", "unparseable"),
    ("ftp://img.example.com/a.jpg", "bad_scheme"),
    ("javascript:alert(1)", "bad_scheme"),
    ("httpx://a.b/", "bad_scheme"),
    ("img.example.com/a.jpg", "bad_scheme"),
    ("//img.example.com/a.jpg", "bad_scheme"),
    ("https://user:secret@img.example.com/a.jpg", "userinfo"),
    ("https://user@img.example.com/a.jpg", "userinfo"),
    ("https://@img.example.com/a.jpg", "userinfo"),
    ("http://127.0.0.2@127.0.0.1/", "userinfo"),
    ("http://", "no_host"),
    ("http:///a.jpg", "no_host"),
    ("http://img$example.com/a.jpg", "bad_host"),
    ("http://img!example.com/a.jpg", "bad_host"),
    ("http://img*example.com/a.jpg", "bad_host"),
    ("http://\u24dbocalhost/", "bad_host"),
    ("http://127\u30020\u30020\u30021/", "bad_host"),
    ("http://.../", "bad_host"),
    ("http://a.b:0/x", "bad_port"),
    ("http://a.b:65536/x", "bad_port"),
    ("http://a.b:99999/x", "bad_port"),
    ("http://a.b:port/x", "bad_port"),
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted_urls_have_no_problem(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "code"), REFUSED)
def test_each_problem_has_its_code(url: str, code: str) -> None:
    problem = url_problem(url)
    assert problem is not None and problem.code == code, problem
    assert problem.message.strip()


def test_the_messages_name_the_fault_and_not_the_url() -> None:
    assert url_problem("https://user:pw@img.example.com/a.jpg") == UrlProblem(
        "userinfo", "URL must not contain a user name or password"
    )
    assert url_problem("http://img$example.com/") == UrlProblem("bad_host", "URL has an invalid host")


def test_the_length_limit_is_2048_by_default_and_inclusive() -> None:
    assert MAX_URL_LENGTH == 2048
    base = "https://img.example.com/"
    at_limit = base + "a" * (MAX_URL_LENGTH - len(base))
    assert url_problem(at_limit) is None
    assert url_problem(at_limit + "a") == UrlProblem("too_long", "URL is 2049 characters long; the limit is 2048")


def test_the_length_limit_can_be_set() -> None:
    assert url_problem("http://a.b/xyz", max_length=14) is None
    problem = url_problem("http://a.b/xyz", max_length=13)
    assert problem is not None and problem.code == "too_long" and "the limit is 13" in problem.message


def test_length_is_judged_first() -> None:
    problem = url_problem("ftp://user@" + "x" * 3000, max_length=100)
    assert problem is not None and problem.code == "too_long"


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("https://img.example.com/a.jpg;https://img.example.com/b.jpg", 2),
        ("https://img.example.com/a.jpg | HTTPS://img.example.com/b.jpg|http://c/d", 3),
        ("https://img.example.com/a.jpg https://img.example.com/b.jpg", 2),
        ("https://img.example.com/a.jpg\n\thttps://img.example.com/b.jpg", 2),
    ],
)
def test_urls_run_together_as_catalog_exports_write_them_are_several_urls(text: str, count: int) -> None:
    assert urls.joined_urls(text) == count
    problem = url_problem(text)
    assert problem is not None and problem.code == "several_urls", problem
    assert problem.message.startswith(f"{count} URLs run together")


@pytest.mark.parametrize(
    "url",
    [
        "https://img.example.com/a.jpg;b.jpg",  # a ';' in a path is legal: the second part is no URL
        "https://img.example.com/a;v=2/b.jpg",
        "https://img.example.com/a.jpg?x=1;y=2",
        "https://img.example.com/fetch;url=http://other.example/b.jpg",
        "https://img.example.com/a.jpg;http://",
    ],
)
def test_a_semicolon_that_joins_no_second_url_is_part_of_the_url(url: str) -> None:
    assert urls.joined_urls(url) == 0
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://IMG.Example.com:8443/a.jpg", "img.example.com"),
        ("http://[::1]:8080/x", "::1"),
        ("http://[::FFFF:127.0.0.1]/x", "::ffff:127.0.0.1"),
        ("http://b\u00fccher.example/x.jpg", "b\u00fccher.example"),
        ("http://a_b/", "a_b"),
    ],
)
def test_url_host_is_the_host_the_address_policy_judges(url: str, host: str) -> None:
    assert url_problem(url) is None
    assert url_host(url) == host


# --- the fast path for plain URLs agrees with the full one ----------------------------------


# Every URL above, plain or not: the fast path must not change a single verdict or host.
SAMPLE_URLS = [*ACCEPTED, *(url for url, _ in REFUSED)]


def verdict(url: str) -> tuple[UrlProblem | None, str]:
    problem = url_problem(url, 2048)
    return problem, "" if problem is not None else url_host(url)


@pytest.mark.parametrize("url", SAMPLE_URLS)
def test_fast_path_matches_full_validation(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = verdict(url)
    monkeypatch.setattr(urls, "_PLAIN_URL_RE", urls.re.compile(r"(?!)"))
    assert verdict(url) == fast


def test_the_rule_imports_nothing_from_the_project() -> None:
    tree = ast.parse(inspect.getsource(urls))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "dataclasses", "re", "urllib"}, imported
