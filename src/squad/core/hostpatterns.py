"""`[sandbox] allow_hosts` patterns: which hosts an attempt with `network = "allow"` may reach.

One pattern is `host` (any port), `host:port` (that port only), `*.domain` (any name below
`domain`, at any depth, not `domain` itself) or `*.domain:port`. A host is a DNS name or an IP
address (IPv6 in brackets: `[::1]:8080`). Names compare case-insensitively, without a trailing
dot. The egress proxy (`squad.agents.egress`) matches the name the agent asked for, never the
address it resolves to (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["HostPattern", "allowed", "parse_authority", "parse_pattern"]

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class HostPattern:
    """One parsed pattern: a host (or the domain below which any name matches) and a port or None."""

    host: str
    port: int | None
    wildcard: bool = False

    def matches(self, host: str, port: int) -> bool:
        """Whether `host:port` (as the agent asked for it) is let through by this pattern."""
        if self.port is not None and port != self.port:
            return False
        name = _normal_host(host)
        if self.wildcard:
            return name.endswith("." + self.host)
        return name == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"*.{host}" if self.wildcard else host
        return text if self.port is None else f"{text}:{self.port}"


def _normal_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host[:-1] if host.endswith(".") else host


def _check_host(host: str) -> str:
    """The host in normal form, or ValueError saying why it is not one."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return name


def parse_authority(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` → (host in normal form, port or None); ValueError if bad."""
    text = text.strip().lower()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed [")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected :port after ]")
            port_text = rest[1:]
        if ":" not in host:
            raise ValueError(f"{text!r}: only IPv6 addresses go in brackets")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:8080")
    else:
        host = text
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return _check_host(host), port


def parse_pattern(text: str) -> HostPattern:
    """One `allow_hosts` entry → HostPattern; ValueError with the reason when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an empty host pattern")
    raw = text.strip()
    if "/" in raw or "@" in raw or any(ch.isspace() for ch in raw):
        raise ValueError(f"{raw!r}: a pattern is host, host:port or *.domain (no scheme, path or user)")
    wildcard = raw.startswith("*.")
    body = raw[2:] if wildcard else raw
    if "*" in body:
        raise ValueError(f"{raw!r}: '*' only as the first label ('*.example.com')")
    host, port = parse_authority(body)
    if wildcard:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise ValueError(f"{raw!r}: '*.' goes before a domain name, not an address")
    return HostPattern(host=host, port=port, wildcard=wildcard)


def allowed(patterns: list[HostPattern], host: str, port: int) -> bool:
    """Whether any of `patterns` lets `host:port` through."""
    return any(p.matches(host, port) for p in patterns)
