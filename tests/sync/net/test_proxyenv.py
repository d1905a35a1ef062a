"""Which proxy a request goes through, from the environment, as Go's ``httpproxy`` decides."""

from __future__ import annotations

import pytest

from sync.errors import FetchFailed
from sync.net.proxyenv import Proxy, ProxyEnv

PROXY = Proxy("http", "proxy.test", 3128)


def test_http_and_https_each_their_own_and_upper_case_first() -> None:
    env = ProxyEnv.from_environ(
        {"HTTP_PROXY": "http://proxy.test:3128", "http_proxy": "http://other:1",
         "https_proxy": "https://user:p%40ss@tls.test"}
    )  # fmt: skip
    assert env.proxy_for("http", "pub.example", 80) == PROXY
    assert env.proxy_for("https", "pub.example", 443) == Proxy(
        "https", "tls.test", 443, ("user", "p@ss")
    )
    only_http = ProxyEnv.from_environ({"HTTP_PROXY": "proxy.test:3128"})  # no scheme: http://
    assert only_http.proxy_for("http", "pub.example", 80) == PROXY
    assert only_http.proxy_for("https", "pub.example", 443) is None  # no fallback
    assert ProxyEnv.from_environ({"HTTP_PROXY": ""}).proxy_for("http", "a.example", 80) is None
    assert ProxyEnv().proxy_for("http", "a.example", 80) is None


def test_cgi_environments_ignore_http_proxy() -> None:
    env = ProxyEnv.from_environ({"HTTP_PROXY": "proxy.test:3128", "REQUEST_METHOD": "GET"})
    assert env.proxy_for("http", "pub.example", 80) is None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "proxied"),
    [
        ("", "pub.example", 80, True),
        ("", "localhost", 80, False),  # never proxied
        ("", "127.0.0.1", 80, False),
        ("", "127.9.9.9", 80, False),
        ("", "[::1]", 80, False),
        ("", "10.0.0.1", 80, True),
        ("*", "pub.example", 80, False),
        ("pub.example", "pub.example", 80, False),
        ("pub.example", "PUB.example.", 80, False),
        ("pub.example", "a.pub.example", 80, False),  # and its subdomains
        ("pub.example", "xpub.example", 80, True),
        (".pub.example", "pub.example", 80, True),  # only subdomains
        (".pub.example", "a.pub.example", 80, False),
        ("*.pub.example", "a.pub.example", 80, False),
        ("*.pub.example", "pub.example", 80, True),
        ("pub.example:8080", "pub.example", 80, True),
        ("pub.example:8080", "pub.example", 8080, False),
        (" other.example , pub.example ", "pub.example", 80, False),
        ("10.0.0.0/8", "10.1.2.3", 80, False),
        ("10.0.0.0/8", "11.1.2.3", 80, True),
        ("10.0.0.1", "10.0.0.1", 80, False),
        ("10.0.0.1:81", "10.0.0.1", 80, True),
        ("2001:db8::/32", "[2001:db8::1]", 80, False),
        ("[2001:db8::1]:80", "[2001:db8::1]", 80, False),
        ("2001:db8::1", "2001:db8::2", 80, True),
        ("10.0.0.0/8", "pub.example", 80, True),
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, proxied: bool) -> None:
    env = ProxyEnv.from_environ({"HTTP_PROXY": "proxy.test:3128", "no_proxy": no_proxy})
    assert (env.proxy_for("http", host, port) is not None) is proxied


@pytest.mark.parametrize("value", ["socks5://proxy.test:1080", "http://proxy.test:99999"])
def test_an_unusable_proxy_is_fetch_failed_not_bypassed(value: str) -> None:
    env = ProxyEnv.from_environ({"HTTPS_PROXY": value})
    with pytest.raises(FetchFailed, match="proxy"):
        env.proxy_for("https", "pub.example", 443)
