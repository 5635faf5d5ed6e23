"""`allow_hosts` patterns (squad.core.hostpatterns): what they let through, and which are refused."""

from __future__ import annotations

import pytest

from squad.agents.sandbox import config_for
from squad.core.hostpatterns import allowed, parse_pattern
from squad.core.settings import AgentConfig, SandboxConfig, Settings


@pytest.mark.parametrize(("pattern", "host", "port", "expected"), [
    ("api.example.com", "api.example.com", 443, True),
    ("api.example.com", "API.Example.COM.", 8080, True),  # any port, any case, a trailing dot
    ("api.example.com", "example.com", 443, False),
    ("api.example.com", "evil-api.example.com", 443, False),
    ("api.example.com:443", "api.example.com", 443, True),
    ("api.example.com:443", "api.example.com", 80, False),
    ("*.example.com", "a.b.example.com", 443, True),
    ("*.example.com", "example.com", 443, False),  # the domain itself is its own pattern
    ("*.example.com", "badexample.com", 443, False),
    ("*.example.com:443", "x.example.com", 22, False),
    ("127.0.0.1:8080", "127.0.0.1", 8080, True),
    ("127.0.0.1:8080", "127.0.0.2", 8080, False),
    ("[::1]:8080", "[0:0::1]", 8080, True),
    ("[2001:db8::1]", "2001:db8::1", 22, True),
])
def test_a_pattern_matches_the_host_and_port_the_agent_asked_for(pattern: str, host: str, port: int,
                                                                  expected: bool) -> None:
    assert allowed([parse_pattern(pattern)], host, port) is expected


@pytest.mark.parametrize("bad", ["", "https://api.example.com", "api.example.com/v1", "user@host",
                                 "api.*.com", "*", "*.127.0.0.1", "host:0", "host:99999", "host:http",
                                 "::1", "[::1", "[example.com]:80", "-bad-.com", "two words"])
def test_a_bad_pattern_says_why(bad: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_pattern(bad)


def test_settings_refuse_a_bad_pattern_and_merge_an_agents_hosts() -> None:
    with pytest.raises(ValueError, match="allow_hosts"):
        SandboxConfig(network="allow", allow_hosts=["http://x/"])
    base = SandboxConfig(network="allow", allow_hosts=["a.example.com"])
    merged = base.merged(SandboxConfig(allow_hosts=["b.example.com:443"]))
    assert (merged.network, merged.allow_hosts) == ("allow", ["a.example.com", "b.example.com:443"])


def test_presets_add_their_model_api_hosts() -> None:
    settings = Settings(sandbox=SandboxConfig(network="allow", allow_hosts=["pypi.org"]))
    claude = config_for(settings, AgentConfig(command=["claude", "-p"]))
    assert claude.allow_hosts[0] == "pypi.org" and "api.anthropic.com" in claude.allow_hosts
    codex = config_for(settings, AgentConfig(command=["/usr/local/bin/codex", "exec"]))
    assert "api.openai.com" in codex.allow_hosts and "api.anthropic.com" not in codex.allow_hosts
    assert config_for(settings, AgentConfig(command=["my-agent"])).allow_hosts == ["pypi.org"]
