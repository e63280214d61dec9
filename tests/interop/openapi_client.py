"""Uses quantd's OpenAPI document the way a generated client does, against a running server.

Usage: openapi_client.py SPEC.json BASE_URL

1. Validates the document with openapi-spec-validator (parameters that a path template does
   not hold, bad schemas, unresolved references all fail here).
2. For every GET operation with query parameters, builds each request only from what the
   document declares (a parameter's `in` decides where its value goes; values come from its
   schema: enum members, the integer range and default, ids seen in earlier answers), calls the
   server, and checks a 2xx JSON answer against the operation's response schema. Values just
   outside a declared integer range must be refused with 400 problem+json: the declared range
   is the server's.

Prints a JSON summary: the operations exercised and the requests made.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate


def main():
    spec_path, base_url = sys.argv[1], sys.argv[2].rstrip("/")
    with open(spec_path) as f:
        spec = json.load(f)
    validate(spec)

    summary = {"operations": [], "requests": 0}
    for path, item in spec["paths"].items():
        operation = item.get("get")
        if operation is None:
            continue
        parameters = [resolve(spec, p) for p in operation.get("parameters", [])]
        for parameter in parameters:
            if parameter["in"] == "path":
                assert "{%s}" % parameter["name"] in path, (
                    f"{path}: '{parameter['name']}' is declared in the path but the path has no "
                    f"{{{parameter['name']}}}"
                )
        query = [p for p in parameters if p["in"] == "query"]
        if not query or any(p["in"] == "path" for p in parameters):
            continue
        checker = OperationChecker(spec, base_url, path, operation)
        exercise(checker, query)
        summary["operations"].append(
            {"path": path, "query": sorted(p["name"] for p in query)}
        )
        summary["requests"] += checker.requests
    print(json.dumps(summary))


def resolve(spec, node):
    """Follows a local `$ref` (`#/components/...`)."""
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for key in node["$ref"].lstrip("#/").split("/"):
            target = target[key.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


class OperationChecker:
    """Calls one operation with query values and checks the answer against its schema."""

    def __init__(self, spec, base_url, path, operation):
        self.spec = spec
        self.base_url = base_url
        self.path = path
        self.operation = operation
        self.requests = 0
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        # `#/components/...` references resolve against this root, as in the document.
        root = dict(schema, components=spec["components"])
        self.validator = OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER)

    def call(self, query):
        """The status, content type and JSON body of GET path?query."""
        url = self.base_url + self.path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        self.requests += 1
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, response.headers.get("content-type"), json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("content-type"), json.load(error)

    def ok(self, query):
        """Calls with `query`; the answer must be a 200 matching the response schema."""
        status, content_type, body = self.call(query)
        assert status == 200, f"GET {self.path} {query}: {status} {body}"
        assert content_type == "application/json", f"GET {self.path}: {content_type}"
        errors = sorted(self.validator.iter_errors(body), key=str)
        assert not errors, f"GET {self.path} {query}: {errors[0]}"
        # A filter named like an item field holds on every item.
        for name, value in query.items():
            for item in body.get("items", []):
                if name in item:
                    assert str(item[name]) == str(value), (
                        f"GET {self.path} {query}: item {item.get('id')} has {name}={item[name]}"
                    )
        return body

    def refused(self, query):
        status, content_type, body = self.call(query)
        assert status == 400, f"GET {self.path} {query}: {status}, expected 400"
        assert content_type == "application/problem+json", content_type
        return body


def exercise(checker, query_parameters):
    """Every query parameter alone with each value its schema suggests, then all together."""
    unfiltered = checker.ok({})
    items = unfiltered.get("items", [])
    chosen = {}
    for parameter in query_parameters:
        assert not parameter.get("required", False), (
            f"{checker.path}: query parameter {parameter['name']} is required"
        )
        name = parameter["name"]
        schema = resolve(checker.spec, parameter["schema"])
        for value in values(checker, name, schema, items, query_parameters):
            checker.ok({name: value})
            chosen[name] = value
        if schema.get("type") == "integer":
            if "minimum" in schema:
                checker.refused({name: schema["minimum"] - 1})
            if "maximum" in schema:
                checker.refused({name: schema["maximum"] + 1})
    checker.ok(chosen)


def values(checker, name, schema, items, query_parameters):
    """Values of one parameter, from its schema and what the server already answered."""
    if "enum" in schema:
        return list(schema["enum"])
    if schema.get("type") == "integer":
        found = [schema.get(key) for key in ("minimum", "default", "maximum")]
        return [v for v in dict.fromkeys(found) if v is not None]
    if schema.get("format") == "uuid":
        if name == "cursor":
            # The next page's cursor, from a page of the smallest declared size.
            limit = next(
                (p for p in query_parameters if p["name"] == "limit"), None
            )
            size = resolve(checker.spec, limit["schema"]).get("minimum", 1) if limit else 1
            page = checker.ok({"limit": size} if limit else {})
            return [page["next_cursor"]] if page.get("next_cursor") else []
        return list(dict.fromkeys(item[name] for item in items if name in item))
    return []


if __name__ == "__main__":
    main()
