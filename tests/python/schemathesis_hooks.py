"""Schemathesis hooks of tests/clients.rs: the rules of Portico's OpenAPI document that only its
prose can state.

A Bulk Data kick-off's `_typeFilter` is `Type?query`. The document's pattern pins the type (one the
server exports) and leaves the query free, since only the search compiler can tell which queries
compile; and when `_type` names types, a filter must be for one of them, a rule between two
parameters that JSON Schema cannot express. The server answers 400 to a filter that breaks either
(tests/api/export.rs checks both). So before each call this hook keeps every schema-valid filter
within both rules: it drops a filter for a type `_type` leaves out, and sends the rest of the
query as an `_id` value, which every type takes whatever it is. A filter that breaks the pattern is
left as it is: it stays invalid, as it was generated.
"""

import re
from urllib.parse import quote

import schemathesis

KICKOFFS = {"/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/{id}/$export"}
# A POSTed Parameters entry's value: the first of these keys that holds a string.
VALUE_KEYS = ("valueString", "valueInstant", "valueCode", "valueDateTime", "valueUri")
# What Rust's str::trim takes off `_type`'s items (Unicode White_Space); str.strip takes more.
WHITE_SPACE = "".join(
    [chr(c) for c in range(0x09, 0x0E)]
    + [" ", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _value_key(entry):
    for key in VALUE_KEYS:
        if isinstance(entry.get(key), str):
            return key
    return None


def _named_types(query, entries):
    """The types `_type` names in the query and the body, or None if one is not a string."""
    values = _as_list(query.get("_type"))
    for entry in entries:
        if entry.get("name") == "_type" and _value_key(entry):
            values.append(entry[_value_key(entry)])
    if not all(isinstance(value, str) for value in values):
        return None
    return {
        item.strip(WHITE_SPACE)
        for value in values
        for item in value.split(",")
        if item.strip(WHITE_SPACE)
    }


@schemathesis.hook
def before_call(context, case, kwargs):
    operation = case.operation
    if operation.path not in KICKOFFS:
        return
    definition = operation.schema.raw_schema["paths"][operation.path][operation.method.lower()]
    pattern = next(
        param["schema"]["items"]["pattern"]
        for param in definition["parameters"]
        if param["name"] == "_typeFilter"
    )
    valid = re.compile(pattern)
    query = case.query if isinstance(case.query, dict) else {}
    body = case.body if isinstance(case.body, dict) else {}
    listed = body.get("parameter")
    entries = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    named = _named_types(query, entries)
    if named is None:
        return

    def within_rules(value):
        """`value` brought within both rules; None to drop it."""
        if not isinstance(value, str) or not valid.match(value):
            return value
        resource_type, rest = value.split("?", 1)
        if named and resource_type not in named:
            return None
        return f"{resource_type}?_id={quote(rest, safe='')}"

    if "_typeFilter" in query:
        kept = [v for v in map(within_rules, _as_list(query["_typeFilter"])) if v is not None]
        if kept:
            query["_typeFilter"] = kept
        else:
            del query["_typeFilter"]
    if isinstance(listed, list):
        for entry in entries:
            key = _value_key(entry)
            if entry.get("name") == "_typeFilter" and key:
                value = within_rules(entry[key])
                if value is None:
                    listed.remove(entry)
                else:
                    entry[key] = value
