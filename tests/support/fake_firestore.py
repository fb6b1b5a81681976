"""A loopback stand-in for the Firestore v1 API, as much of it as the ledger uses.

    with FakeFirestore() as firestore:
        env = {"REGWARDEN_GCP_ENDPOINT_FIRESTORE": firestore.url}
        ledger = FirestoreLedger("demo-proj", env=env)

Served (URL templates of the GAPIC client's REST transport,
`google/cloud/firestore_v1/services/firestore/transports/rest_base.py`):

- `POST /v1/{database=projects/*/databases/*}/documents:batchGet` — `BatchGetDocumentsRequest`
  `{"documents": [name…]}`; answered as the REST transport's stream, a JSON array of
  `BatchGetDocumentsResponse` (`{"found": Document, "readTime"}` or `{"missing": name,
  "readTime"}`).
- `POST /v1/{database}/documents:commit` — `CommitRequest` `{"writes": [Write…]}`: `update`
  (a `Document`, with or without `updateMask`, with or without `updateTransforms` of
  `increment`, `maximum` or `minimum`) or `delete` (a name), each with an optional
  `currentDocument` (`Precondition`: `exists` or `updateTime`); answered `CommitResponse`
  `{"writeResults": [{"updateTime", "transformResults"}…], "commitTime"}` (a delete's
  result has no updateTime).
- `POST /v1/{parent=projects/*/databases/*/documents}:runQuery` — `RunQueryRequest` with a
  `structuredQuery` of one collection (`from`), `where` a `fieldFilter` or an AND
  `compositeFilter` of them (ops EQUAL and LESS_THAN_OR_EQUAL), `orderBy` ascending, `limit`;
  answered as a JSON array of `RunQueryResponse` (`{"document", "readTime"}`, or one
  `{"readTime"}` when nothing matched).

Shapes: `google/cloud/firestore_v1/types/{firestore,document,write,common,query}.py` (the
protos; JSON names camelCase, int64 as strings, enums by number or name — the client sends
numbers, `$alt=json;enum-encoding=int`). Semantics as Google documents them
(cloud.google.com/firestore/docs/reference/rest): a commit is atomic — every precondition is
checked before any write lands, and the first that fails fails the WHOLE commit: `exists: false`
on a document that is there → 409 ALREADY_EXISTS, `exists: true` on one that is not → 404
NOT_FOUND, an `updateTime` that is not the document's → 400 FAILED_PRECONDITION (google.rpc's
HTTP mapping; 409 ABORTED is contention, which `fail_next(…, 409)` injects). A write's field
transforms apply after its update, in order (`DocumentTransform.FieldTransform`): `increment`
adds an integer or double to the field, and `maximum` / `minimum` keep the larger / smaller of
it and the field — each sets the field to the given value when it is absent or not a number;
integers stay integers (an increment that overflows saturates), a double on either side makes a
double; `transformResults` answers the fields' new values. A transformed field may not also be
in the update mask, nor transformed twice in one write (400 INVALID_ARGUMENT). Every write gives
the document a new `updateTime` (the commit time, microseconds, strictly increasing). Document
and collection ids are checked as Firestore does (no `/`, not `.` or `..`, not `__.*__`, at most
1500 bytes) → 400 INVALID_ARGUMENT. A query Firestore could serve only with a composite index
(equality filters together with an inequality or an order on another field, or orders on two
fields) fails as Firestore's does without one: 400 FAILED_PRECONDITION "The query requires an
index". Values are compared in Firestore's type order (null < booleans < numbers < timestamps <
strings), only within their type for `<=`.

Anything else — another method or URL, a transaction, a `transform` write or another field
transform (server values, array unions and removals), a query with an operator,
direction, cursor, projection or shape not listed above, two writes of one document in a
commit — is refused with 501 UNIMPLEMENTED naming it, so a new kind of request cannot pass
silently. TTL policies are not run: an expired document stays until deleted (Firestore
deletes them lazily too).

Test hooks: `hold_next_commit()` parks the next commit before it is served (a racing writer
goes first meanwhile); `lose_next_commit_answer()` applies the next commit and answers 503;
`documents(collection)` shows what is stored; `conflicts` lists the status of every commit
refused for a precondition.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from support.google_fake import GoogleFake, Reply, Request

__all__ = ["FakeFirestore", "HeldCommit", "fake_firestore"]

_DB = r"/v1/(?P<db>projects/[^/]+/databases/[^/]+)"
_MAX_ID_BYTES = 1500
_MAX_WRITES = 500
_VALUE_KEYS = frozenset(
    {
        "nullValue",
        "booleanValue",
        "integerValue",
        "doubleValue",
        "timestampValue",
        "stringValue",
        "bytesValue",
        "referenceValue",
        "geoPointValue",
        "arrayValue",
        "mapValue",
    }
)
_TYPE_ORDER = {
    "nullValue": 0,
    "booleanValue": 1,
    "integerValue": 2,
    "doubleValue": 2,  # numbers compare with each other
    "timestampValue": 3,
    "stringValue": 4,
}
_FIELD_OPS = {2: "LESS_THAN_OR_EQUAL", 5: "EQUAL"}
_SERVED_OPS = frozenset(_FIELD_OPS.values())


def _error(status: int, name: str, message: str) -> Reply:
    """Google's error envelope with any google.rpc status name."""
    return status, {"error": {"code": status, "message": message, "status": name}}


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply[1]["error"]["message"])
        self.reply = reply


def _unserved(what: str) -> _Refused:
    return _Refused(_error(501, "UNIMPLEMENTED", f"FakeFirestore does not serve {what}"))


def _invalid(message: str) -> _Refused:
    return _Refused(_error(400, "INVALID_ARGUMENT", message))


def _time_text(micros: int) -> str:
    seconds, rest = divmod(micros, 1_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:06d}Z"


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def _nanos(text: str) -> int:
    """An RFC 3339 time (what protobuf's JSON gives a Timestamp) as nanoseconds."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise _invalid(f"invalid timestamp {text!r}")
    whole, fraction, zone = match.groups()
    base = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(base.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def _enum(value: Any, names: dict[int, str]) -> str:
    if isinstance(value, int):
        return names.get(value, str(value))
    return str(value)


@dataclass
class _Stored:
    fields: dict[str, Any]
    create_micros: int
    update_micros: int


@dataclass
class HeldCommit:
    """A commit parked by `hold_next_commit`: `arrived` is set when it is waiting."""

    arrived: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.go.set()


class FakeFirestore(GoogleFake):
    """Firestore's batchGet, commit and runQuery over documents held in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.docs: dict[str, _Stored] = {}
        """Full document name → stored document."""
        self.conflicts: list[str] = []
        """The google.rpc status of every commit refused for a precondition."""
        self._last_micros = 0
        self._holds: list[HeldCommit] = []
        self._lost_answers: list[int] = []
        self.route("POST", _DB + r"/documents:batchGet", self._batch_get)
        self.route("POST", _DB + r"/documents:commit", self._commit)
        self.route("POST", _DB + r"/documents:runQuery", self._run_query)
        self.route("GET", _DB + r"/documents/(?P<path>[^:]+)", self._get_document)
        for method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
            self.route(method, r"/.*", self._anything_else)

    # -- test hooks ----------------------------------------------------------------------------

    def hold_next_commit(self) -> HeldCommit:
        """Park the next commit request before it is served (the fake is free meanwhile),
        until `release()`."""
        held = HeldCommit()
        with self.lock:
            self._holds.append(held)
        return held

    def lose_next_commit_answer(self, status: int = 503) -> None:
        """Apply the next commit, then answer it with `status` as if the answer was lost on
        the way back (the client library re-sends a commit that met UNAVAILABLE)."""
        with self.lock:
            self._lost_answers.append(status)

    def documents(self, collection: str) -> dict[str, dict[str, Any]]:
        """Document id → fields (JSON `Value`s) of one top-level collection, any database."""
        with self.lock:
            out = {}
            for name, doc in self.docs.items():
                parent, _, doc_id = name.rpartition("/")
                if parent.endswith(f"/documents/{collection}"):
                    out[doc_id] = doc.fields
            return out

    def dispatch(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if request.method == "POST" and request.raw_path.endswith("/documents:commit"):
            with self.lock:
                held = self._holds.pop(0) if self._holds else None
            if held is not None:  # outside the lock: other requests are served meanwhile
                held.arrived.set()
                if not held.go.wait(60):
                    raise AssertionError("a held commit was never released")
        return super().dispatch(request)

    # -- plumbing -----------------------------------------------------------------------------

    def _tick(self) -> int:
        """The next commit time in microseconds: the clock, but strictly increasing."""
        self._last_micros = max(time.time_ns() // 1000, self._last_micros + 1)
        return self._last_micros

    @staticmethod
    def _only(body: Any, what: str, allowed: set[str]) -> dict[str, Any]:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _invalid(f"{what}: the body is not a JSON object")
        extra = sorted(set(body) - allowed - {"database", "parent"})
        if extra:
            raise _unserved(f"{what} with {', '.join(extra)}")
        return body

    def _check_name(self, db: str, name: Any) -> str:
        """A document name under `db`, with ids Firestore accepts."""
        prefix = f"{db}/documents/"
        if not isinstance(name, str) or not name.startswith(prefix):
            raise _invalid(f"document name {name!r} is not under {prefix}")
        segments = name[len(prefix) :].split("/")
        if len(segments) % 2:
            raise _invalid(f"{name!r} names a collection, not a document")
        for segment in segments:
            if (
                not segment
                or segment in (".", "..")
                or re.fullmatch(r"__.*__", segment)
                or len(segment.encode()) > _MAX_ID_BYTES
            ):
                raise _invalid(f"invalid id {segment!r} in {name!r}")
        return name

    def _document(self, name: str, doc: _Stored) -> dict[str, Any]:
        return {
            "name": name,
            "fields": doc.fields,
            "createTime": _time_text(doc.create_micros),
            "updateTime": _time_text(doc.update_micros),
        }

    def _served(self, handler: Any, request: Request) -> Reply:
        try:
            result: Reply = handler(request)
        except _Refused as refused:
            return refused.reply
        return result

    def _anything_else(self, request: Request) -> Reply:
        return _unserved(f"{request.method} {request.raw_path}").reply

    # -- batchGet ------------------------------------------------------------------------------

    def _batch_get(self, request: Request) -> Reply:
        return self._served(self._batch_get_now, request)

    def _batch_get_now(self, request: Request) -> Reply:
        db = request.params["db"]
        body = self._only(request.body, "batchGet", {"documents"})
        names = body.get("documents") or []
        if not names:
            raise _invalid("batchGet needs documents")
        read = _time_text(self._tick())
        answers = []
        for name in names:
            self._check_name(db, name)
            doc = self.docs.get(name)
            if doc is None:
                answers.append({"missing": name, "readTime": read})
            else:
                answers.append({"found": self._document(name, doc), "readTime": read})
        return 200, answers

    def _get_document(self, request: Request) -> Reply:
        return self._served(self._get_document_now, request)

    def _get_document_now(self, request: Request) -> Reply:
        """GetDocument (`GET /v1/{name=projects/*/databases/*/documents/*/**}`): the
        document, or NOT_FOUND as Firestore answers for an absent one."""
        db = request.params["db"]
        self._only(None, "get", set())
        extra = sorted(set(request.query) - {"$alt"})
        if extra:
            raise _unserved(f"get with {', '.join(extra)}")
        name = f"{db}/documents/{request.params['path']}"
        self._check_name(db, name)
        doc = self.docs.get(name)
        if doc is None:
            return _error(404, "NOT_FOUND", f'Document "{name}" not found.')
        return 200, self._document(name, doc)

    # -- commit -------------------------------------------------------------------------------

    def _commit(self, request: Request) -> Reply:
        return self._served(self._commit_now, request)

    def _commit_now(self, request: Request) -> Reply:
        db = request.params["db"]
        body = self._only(request.body, "commit", {"writes"})
        writes = body.get("writes") or []
        if len(writes) > _MAX_WRITES:
            raise _invalid(f"a commit holds at most {_MAX_WRITES} writes, got {len(writes)}")
        plan = [self._write(db, w) for w in writes]
        names = [name for name, _, _, _, _ in plan]
        if len(set(names)) != len(names):
            raise _unserved("two writes of one document in a commit")
        for name, _, _, condition, _ in plan:  # every precondition before any write
            refused = self._precondition(name, condition)
            if refused is not None:
                self.conflicts.append(refused[1]["error"]["status"])
                return refused
        now = self._tick()
        results: list[dict[str, Any]] = []
        for name, fields, mask, _, transforms in plan:
            if fields is None:
                self.docs.pop(name, None)
                results.append({})
                continue
            there = self.docs.get(name)
            if mask is None or there is None:
                new = dict(fields)  # the whole document (a mask's fields are all in it)
            else:
                new = dict(there.fields)
                for path in mask:
                    if path in fields:
                        new[path] = fields[path]
                    else:
                        new.pop(path, None)  # in the mask, not in the document: deleted
            transformed = [_transform(new, path, op, value) for path, op, value in transforms]
            created = there.create_micros if there is not None else now
            self.docs[name] = _Stored(new, created, now)
            result: dict[str, Any] = {"updateTime": _time_text(now)}
            if transformed:
                result["transformResults"] = transformed
            results.append(result)
        if self._lost_answers:
            status = self._lost_answers.pop(0)
            return _error(status, "UNAVAILABLE", "the commit's answer was lost (injected)")
        return 200, {"writeResults": results, "commitTime": _time_text(now)}

    def _write(
        self, db: str, write: Any
    ) -> tuple[
        str,
        dict[str, Any] | None,
        list[str] | None,
        dict[str, Any],
        list[tuple[str, str, dict[str, Any]]],
    ]:
        """(name, fields or None for a delete, update mask, precondition, field transforms)
        of one Write."""
        if not isinstance(write, dict):
            raise _invalid("a write is not a JSON object")
        served = {"update", "delete", "updateMask", "currentDocument", "updateTransforms"}
        extra = sorted(set(write) - served)
        if extra:
            raise _unserved(f"writes with {', '.join(extra)}")
        condition = write.get("currentDocument") or {}
        if set(condition) - {"exists", "updateTime"} or len(condition) > 1:
            raise _invalid(f"invalid precondition {condition!r}")
        if ("update" in write) == ("delete" in write):
            raise _invalid("a write is one of update or delete")
        if "delete" in write:
            if "updateMask" in write or "updateTransforms" in write:
                raise _invalid("updateMask and updateTransforms are for updates only")
            return self._check_name(db, write["delete"]), None, None, condition, []
        doc = write["update"]
        if not isinstance(doc, dict) or set(doc) - {"name", "fields"}:
            raise _invalid(f"an update's document has {sorted(doc)}: only name and fields")
        fields = doc.get("fields") or {}
        for key, value in fields.items():
            self._check_value(key, value)
        mask = None
        if "updateMask" in write:
            mask = list((write["updateMask"] or {}).get("fieldPaths") or [])
            for path in mask:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", path):
                    raise _unserved(f"field path {path!r} (nested or quoted paths)")
            stray = sorted(set(fields) - set(mask))
            if stray:
                raise _invalid(f"fields {stray} are not in the update mask")
        transforms = self._transforms(write.get("updateTransforms") or [], mask)
        return self._check_name(db, doc.get("name")), fields, mask, condition, transforms

    def _transforms(
        self, given: Any, mask: list[str] | None
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """(field path, op, numeric Value) of each field transform, checked."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        for one in given:
            if not isinstance(one, dict) or "fieldPath" not in one:
                raise _invalid(f"a field transform without a fieldPath: {one!r}")
            path = one["fieldPath"]
            ops = sorted(set(one) - {"fieldPath"})
            if len(ops) != 1:
                raise _invalid(f"a field transform is one operation: {ops}")
            (op,) = ops
            if op not in ("increment", "maximum", "minimum"):
                raise _unserved(f"field transform {op}")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", path):
                raise _unserved(f"field path {path!r} (nested or quoted paths)")
            if path in (mask or []):
                raise _invalid(f"field {path!r} is both in the update mask and transformed")
            if path in (p for p, _, _ in out):
                raise _invalid(f"field {path!r} is transformed twice in one write")
            value = one[op]
            self._check_value(path, value)
            if next(iter(value)) not in ("integerValue", "doubleValue"):
                raise _invalid(f"{op} of {path!r} takes an integer or a double: {value!r}")
            out.append((path, op, value))
        return out

    def _check_value(self, where: str, value: Any) -> None:
        if not isinstance(value, dict) or len(value) != 1 or not set(value) <= _VALUE_KEYS:
            raise _invalid(f"field {where}: {value!r} is not a Firestore Value")
        kind, inner = next(iter(value.items()))
        if kind == "integerValue" and not re.fullmatch(r"-?\d+", str(inner)):
            raise _invalid(f"field {where}: integerValue {inner!r}")
        if kind == "timestampValue":
            _nanos(str(inner))
        if kind == "arrayValue":
            for n, item in enumerate((inner or {}).get("values") or []):
                self._check_value(f"{where}[{n}]", item)
        if kind == "mapValue":
            for key, item in ((inner or {}).get("fields") or {}).items():
                self._check_value(f"{where}.{key}", item)

    def _precondition(self, name: str, condition: dict[str, Any]) -> Reply | None:
        there = self.docs.get(name)
        if "exists" in condition:
            if condition["exists"] and there is None:
                return _error(404, "NOT_FOUND", f"No document to update: {name}")
            if not condition["exists"] and there is not None:
                return _error(409, "ALREADY_EXISTS", f"Document already exists: {name}")
        if "updateTime" in condition:
            wanted = _nanos(str(condition["updateTime"]))
            if there is None or there.update_micros * 1000 != wanted:
                stored = "none" if there is None else _time_text(there.update_micros)
                return _error(
                    400,
                    "FAILED_PRECONDITION",
                    f"the stored version ({stored}) does not match the required base "
                    f"version ({condition['updateTime']}) of {name}",
                )
        return None

    # -- runQuery -----------------------------------------------------------------------------

    def _run_query(self, request: Request) -> Reply:
        return self._served(self._run_query_now, request)

    def _run_query_now(self, request: Request) -> Reply:
        db = request.params["db"]
        body = self._only(request.body, "runQuery", {"structuredQuery"})
        query = body.get("structuredQuery")
        if not isinstance(query, dict):
            raise _unserved("runQuery without a structuredQuery")
        extra = sorted(set(query) - {"from", "where", "orderBy", "limit"})
        if extra:
            raise _unserved(f"queries with {', '.join(extra)}")
        sources = query.get("from") or []
        if len(sources) != 1 or set(sources[0]) != {"collectionId"}:
            raise _unserved(f"a query from {sources!r} (one collection, no allDescendants)")
        collection = sources[0]["collectionId"]
        filters = self._filters(query.get("where"))
        orders = []
        for order in query.get("orderBy") or []:
            path = ((order.get("field") or {}).get("fieldPath")) or ""
            direction = _enum(order.get("direction", 1), {1: "ASCENDING", 2: "DESCENDING"})
            if direction != "ASCENDING":
                raise _unserved(f"orderBy {path} {direction}")
            orders.append(path)
        self._index_check(filters, orders)
        limit = query.get("limit")
        if isinstance(limit, dict):
            limit = limit.get("value")
        parent = f"{db}/documents/{collection}"
        rows = []
        for name, doc in sorted(self.docs.items()):
            if name.rpartition("/")[0] != parent:
                continue
            if all(self._matches(doc.fields.get(path), op, value) for path, op, value in filters):
                sort_key = []
                for path in orders or [p for p, op, _ in filters if op != "EQUAL"]:
                    if path == "__name__":
                        continue
                    value = doc.fields.get(path)
                    if value is None:
                        break  # ordered by a field it lacks: not in the result
                    sort_key.append(self._order_key(value))
                else:
                    rows.append((sort_key, name, doc))
        rows.sort(key=lambda r: (r[0], r[1]))
        if limit is not None:
            rows = rows[: int(limit)]
        read = _time_text(self._tick())
        if not rows:
            return 200, [{"readTime": read}]
        return 200, [{"document": self._document(n, d), "readTime": read} for _, n, d in rows]

    def _filters(self, where: Any) -> list[tuple[str, str, dict[str, Any]]]:
        if not where:
            return []
        if set(where) == {"fieldFilter"}:
            parts = [where]
        elif set(where) == {"compositeFilter"}:
            composite = where["compositeFilter"]
            if _enum(composite.get("op"), {1: "AND", 2: "OR"}) != "AND":
                raise _unserved(f"compositeFilter {composite.get('op')!r}")
            parts = composite.get("filters") or []
        else:
            raise _unserved(f"filters {sorted(where)}")
        out = []
        for part in parts:
            if set(part) != {"fieldFilter"}:
                raise _unserved(f"nested filters {sorted(part)}")
            one = part["fieldFilter"]
            path = (one.get("field") or {}).get("fieldPath") or ""
            op = _enum(one.get("op"), _FIELD_OPS)
            if op not in _SERVED_OPS:
                raise _unserved(f"field filter op {one.get('op')!r}")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", path):
                raise _unserved(f"filters on field path {path!r}")
            value = one.get("value")
            self._check_value(path, value)
            if next(iter(value)) not in _TYPE_ORDER:
                raise _unserved(f"filters on {next(iter(value))}")
            out.append((path, op, value))
        return out

    @staticmethod
    def _index_check(filters: list[tuple[str, str, dict[str, Any]]], orders: list[str]) -> None:
        """Refuse, as Firestore does, what only a composite index would serve."""
        equal = {p for p, op, _ in filters if op == "EQUAL"}
        ranged = {p for p, op, _ in filters if op != "EQUAL"}
        ordered = [p for p in orders if p != "__name__"]
        if ranged and ordered and ordered[0] not in ranged:
            raise _invalid(
                f"the first orderBy must be the inequality's field {sorted(ranged)[0]!r}"
            )
        single = ranged | set(ordered)
        if len(single) > 1 or (equal and single):
            raise _Refused(
                _error(400, "FAILED_PRECONDITION", "The query requires an index (composite)")
            )

    @staticmethod
    def _order_key(value: dict[str, Any]) -> tuple[int, Any]:
        kind, inner = next(iter(value.items()))
        rank = _TYPE_ORDER.get(kind)
        if rank is None:
            raise _unserved(f"ordering by {kind}")
        if kind == "nullValue":
            return rank, 0
        if kind in ("integerValue", "doubleValue"):
            return rank, float(inner) if kind == "doubleValue" else int(inner)
        if kind == "timestampValue":
            return rank, _nanos(str(inner))
        return rank, inner

    def _matches(self, stored: Any, op: str, value: dict[str, Any]) -> bool:
        if stored is None:
            return False  # a document without the field never matches a filter on it
        if next(iter(stored)) not in _TYPE_ORDER:
            return False
        have, want = self._order_key(stored), self._order_key(value)
        if op == "EQUAL":
            return have == want
        return have[0] == want[0] and have <= want  # LESS_THAN_OR_EQUAL, within its type


_INT64 = (-(2**63), 2**63 - 1)


def _number(value: dict[str, Any] | None) -> int | float | None:
    """A stored integer or double Value as a number (None: absent or not a number)."""
    if value is None:
        return None
    if "integerValue" in value:
        return int(value["integerValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    return None


def _transform(fields: dict[str, Any], path: str, op: str, value: dict[str, Any]) -> Any:
    """Apply one field transform to `fields` (in place); the field's new Value."""
    given = _number(value)
    old = _number(fields.get(path))
    assert given is not None  # checked in _transforms
    if old is None:
        new: int | float = given
    elif op == "increment":
        new = old + given
        if isinstance(new, int):
            new = min(max(new, _INT64[0]), _INT64[1])  # integer overflow saturates
    elif op == "maximum":
        new = given if given > old else old  # equivalent operands: the field is kept
    else:
        new = given if given < old else old
    stored = {"integerValue": str(new)} if isinstance(new, int) else {"doubleValue": new}
    fields[path] = stored
    return stored


@pytest.fixture
def fake_firestore(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFirestore]:
    """A fresh FakeFirestore, named by `REGWARDEN_GCP_ENDPOINT_FIRESTORE` for the test."""
    with FakeFirestore() as fake:
        monkeypatch.setenv("REGWARDEN_GCP_ENDPOINT_FIRESTORE", fake.url)
        yield fake
