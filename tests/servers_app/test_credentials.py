"""servers_app.credentials: what counts as the same origin."""

import pytest

from servers_app.credentials import url_origin


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://gpu:7860", "http://gpu:7860/sdapi/v1"),
        ("http://GPU:7860", "http://gpu:7860"),
        ("http://gpu", "http://gpu:80"),
        ("https://gpu/", "https://gpu:443/forge"),
        ("http://user@gpu:7860", "http://gpu:7860"),
    ],
)
def test_same_origin(a, b):
    assert url_origin(a) == url_origin(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://gpu:7860", "https://gpu:7860"),
        ("http://gpu:7860", "http://gpu:7861"),
        ("http://gpu:7860", "http://gpu.evil:7860"),
        ("http://gpu", "http://gpu:443"),
    ],
)
def test_other_origin(a, b):
    assert url_origin(a) != url_origin(b)


def test_unreadable_url_has_no_origin():
    assert url_origin("http://gpu:notaport") is None
