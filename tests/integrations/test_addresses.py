"""Which server URLs MobileSD calls (integrations.addresses.url_problem)."""

import pytest

from integrations.addresses import url_problem

ALLOWED = [
    "http://127.0.0.1:7860",
    "http://localhost:7860",
    "http://[::1]:7861",
    "http://192.168.1.20:7860",
    "http://10.0.0.5",
    "http://172.16.3.4:7860/",
    "http://[fd12:3456::1]:7860",
    "https://gpu-box",
    "http://gpu_box.lan:7860/sd",
    "https://sd.example.org",
    "http://café.local:7860",
]

REFUSED = {
    "unspecified v4": "http://0.0.0.0:7860",
    "this network": "http://0.1.2.3",
    "unspecified v6": "http://[::]:7860",
    "link-local v4": "http://169.254.10.20",
    "link-local v6": "http://[fe80::1]:7860",
    "link-local v6 with zone": "http://[fe80::1%25eth0]:7860",
    "metadata v4": "http://169.254.169.254/latest/meta-data",
    "metadata ecs": "http://169.254.170.2",
    "metadata aws v6": "http://[fd00:ec2::254]",
    "metadata alibaba": "http://100.100.100.200",
    "metadata gcp name": "http://metadata.google.internal/computeMetadata/v1/",
    "metadata gcp name, trailing dot": "http://metadata.google.internal./",
    "metadata gcp short": "http://metadata.goog",
    "metadata mapped in v6": "http://[::ffff:169.254.169.254]",
    "metadata via nat64": "http://[64:ff9b::a9fe:a9fe]",
    "multicast v4": "http://224.0.0.1",
    "multicast v6": "http://[ff02::1]",
    "broadcast": "http://255.255.255.255",
    "reserved": "http://240.0.0.1",
    "decimal ip": "http://2130706433:7860",
    "octal ip": "http://0177.0.0.1:7860",
    "hex ip": "http://0x7f.1:7860",
    "short ip": "http://127.1:7860",
    "leading zero": "http://127.000.000.001",
    "ip with trailing dot": "http://127.0.0.1.:7860",
    "full-width ip": "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:7860",
    "percent-encoded host": "http://%31%32%37.0.0.1",
    "credentials": "http://user:pw@gpu-box:7860",
    "user only": "http://user@gpu-box:7860",
    "scheme": "ftp://gpu-box",
    "query": "http://gpu-box/?a=1",
    "port zero": "http://gpu-box:0",
    "port too big": "http://gpu-box:99999",
    "no host": "http://",
    "space": "http://gpu box",
    "control character": "http://gpu-box\x00:7860",
}


@pytest.mark.parametrize("url", ALLOWED)
def test_loopback_lan_and_names_are_allowed(url):
    assert url_problem(url) is None


@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_refused_urls_say_why(url):
    problem = url_problem(url)

    assert problem
    assert problem.endswith(".")


def test_non_canonical_ip_spellings_are_asked_for_as_a_dotted_quad():
    for url in ("http://2130706433", "http://0177.0.0.1", "http://0x7f.1", "http://127.1"):
        assert "four decimal numbers" in (url_problem(url) or "")


def test_the_reason_never_repeats_the_password():
    assert "s3cret" not in (url_problem("http://me:s3cret@gpu-box:7860") or "s3cret")
