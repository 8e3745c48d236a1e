"""The Grafana dashboard's queries (deploy/grafana), and the metric names each one reads."""

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "execve-tracker.json"
# What Grafana puts in place of its variables when it sends a query, for a test's Prometheus
VARIABLES = {"$__rate_interval": "15s", "$job": ".+", "$instance": ".+"}
# The PromQL functions and aggregations the dashboard may call
FUNCTIONS = {"sum", "rate", "increase", "avg", "max", "min", "topk", "count"}
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def load():
    return json.loads(DASHBOARD.read_text())


def panel_queries(dashboard):
    """Every panel's PromQL expressions."""
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def variable_queries(dashboard):
    """The metric selectors of the template variables' ``label_values(SELECTOR, label)``."""
    selectors = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert found, variable["query"]
            selectors.append(found.group(1))
    return selectors


def substituted(expr):
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr):
    """The metric names an expression reads: its identifiers, once strings, label matchers,
    ranges and ``by (...)`` groupings are taken out; a called name must be a known function."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)
    names = set()
    for name, call in re.findall(rf"({_NAME})\s*(\(?)", expr):
        if call:
            assert name in FUNCTIONS, f"{name}() is not a function the dashboard may use"
        else:
            names.add(name)
    return names
