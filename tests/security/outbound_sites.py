"""Finds, by parsing the source, every place the code can contact another party.

Four kinds of finding, each with its file and line:
- an AWS SDK client (`boto3.client("s3")`, `session.client(...)`, `.resource(...)`, `.create_client(...)`, and
  the Encryption SDK's KMS providers, which make a "kms" client inside);
- a call of `chalicelib.outbound.request` (as `outbound.request(...)` or an imported `request(...)`), named by
  the function it is in, so the test can say which hosts that call site reaches;
- an import of a network library (urllib3, urllib.request, http.client, socket, requests, httpx, sentry_sdk, …);
- a URL literal with a concrete host (`"https://api.twilio.com"`, `f"https://truststore…/{region}"`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CLIENT_FACTORIES = frozenset({"client", "resource", "create_client"})
# Modules whose import means "this file opens connections of its own".
NETWORK_MODULES = frozenset({"urllib3", "urllib.request", "http.client", "socket", "requests", "httpx", "aiohttp",
                             "smtplib", "ftplib", "websocket", "websockets", "grpc", "pycurl", "botocore.httpsession",
                             "sentry_sdk"})
# The Encryption SDK's KMS key providers create their "kms" client themselves (no `.client(...)` in our code):
# importing any of them, or their module, counts as a KMS client.
KMS_PROVIDER = re.compile(r"kms", re.I)
KMS_PROVIDER_CLASS = re.compile(r"kms\w*provider", re.I)


@dataclass
class Findings:
    """What a scan found; `unreadable` lists client calls whose service is not a literal."""

    clients: list[tuple[str, int, str]] = field(default_factory=list)
    unreadable: list[tuple[str, int]] = field(default_factory=list)
    outbound_calls: list[tuple[str, str, int]] = field(default_factory=list)
    network_imports: list[tuple[str, str, int]] = field(default_factory=list)
    url_hosts: list[tuple[str, int, str]] = field(default_factory=list)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the bare string statements (docstrings and the like): prose, not code."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.JoinedStr))}


def _literal_host(node: ast.AST) -> str | None:
    """The host of a URL literal, or of an f-string whose host part is written out; None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        text = str(node.values[0].value)
        if "/" not in text.removeprefix("https://").removeprefix("http://"):
            return None  # the host itself is formatted in (f"https://{host}"): a call site decides it
    else:
        return None
    if not text.startswith(("https://", "http://")):
        return None
    return urlsplit(text).hostname or None


class _Visitor(ast.NodeVisitor):
    def __init__(self, name: str, findings: Findings, prose: set[int]) -> None:
        self.name, self.findings, self.prose = name, findings, prose
        self.scope: list[str] = []
        self.request_names: set[str] = set()  # local names bound to chalicelib.outbound.request
        self.outbound_modules: set[str] = set()  # local names bound to the chalicelib.outbound module

    def _enter(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _enter

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in NETWORK_MODULES:
                self.findings.network_imports.append((self.name, alias.name, node.lineno))
            if alias.name == "chalicelib.outbound":
                self.outbound_modules.add(alias.asname or alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        names = {alias.name: alias.asname or alias.name for alias in node.names}
        if module in NETWORK_MODULES:
            self.findings.network_imports.append((self.name, module, node.lineno))
        for name in names:
            if f"{module}.{name}" in NETWORK_MODULES:
                self.findings.network_imports.append((self.name, f"{module}.{name}", node.lineno))
        if module.startswith("aws_encryption_sdk") and any(KMS_PROVIDER.search(n) for n in (module, *names)):
            self.findings.clients.append((self.name, node.lineno, "kms"))
        if module == "chalicelib.outbound" and "request" in names:
            self.request_names.add(names["request"])
        if module == "chalicelib" and "outbound" in names:
            self.outbound_modules.add(names["outbound"])

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in CLIENT_FACTORIES:
            service = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "service_name"), None)
            if isinstance(service, ast.Constant) and isinstance(service.value, str):
                self.findings.clients.append((self.name, node.lineno, service.value))
            else:
                self.findings.unreadable.append((self.name, node.lineno))
        is_request = (isinstance(func, ast.Name) and func.id in self.request_names) or (
            isinstance(func, ast.Attribute) and func.attr == "request" and isinstance(func.value, ast.Name)
            and func.value.id in self.outbound_modules)
        if is_request:
            self.findings.outbound_calls.append((self.name, ".".join(self.scope) or "<module>", node.lineno))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if KMS_PROVIDER_CLASS.search(node.attr):  # sdk.StrictAwsKmsMasterKeyProvider after `import … as sdk`
            self.findings.clients.append((self.name, node.lineno, "kms"))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        self._url(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if id(node) in self.prose:
            return
        self._url(node)
        self.generic_visit(node)

    def _url(self, node: ast.Constant | ast.JoinedStr) -> None:
        if id(node) in self.prose:
            return
        host = _literal_host(node)
        if host is not None:
            self.findings.url_hosts.append((self.name, node.lineno, host))


def scan(files: Iterable[Path], root: Path) -> Findings:
    """Parse each file and collect what it can contact."""
    findings = Findings()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _Visitor(path.relative_to(root).as_posix(), findings, _docstring_nodes(tree)).visit(tree)
    return findings
