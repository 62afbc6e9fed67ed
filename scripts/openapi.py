#!/usr/bin/env python3
"""Writes crates/herald/src/http/openapi.json, the OpenAPI 3.1 document of Herald's HTTP API.

Edit this script, not the JSON, then run it; a unit test checks that the document lists exactly
the routes the router serves.
"""
import json, pathlib

def ref(name): return {"$ref": f"#/components/schemas/{name}"}
def body(schema): return {"required": True, "content": {"application/json": {"schema": schema}}}
def ok(schema, desc="OK"): return {"description": desc, "content": {"application/json": {"schema": schema}}}
ERR = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
def errors(*codes):
    text = {"400": "bad request (code invalid_message)", "401": "no or bad credentials (unauthorized)",
            "403": "valid credentials, not an admin (forbidden)", "404": "not found (not_found)",
            "413": "body too large (message_too_large)", "503": "an engine failed (processing_error)"}
    return {c: {**ERR, "description": text[c]} for c in codes}
ADMIN = [{"apiKey": []}, {"adminJwt": []}]
def op(summary, responses, request=None, params=None, secured=True, tag="api"):
    o = {"summary": summary, "tags": [tag], "responses": responses}
    if request: o["requestBody"] = request
    if params: o["parameters"] = params
    o["security"] = ADMIN if secured else []
    return o
def path_param(name, desc): return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": desc}
def query_param(name, desc, schema=None): return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"}, "description": desc}

ID = path_param("id", "user or project id")
TOPIC = path_param("topic", "topic name, percent-encoded (`/` as %2F)")
COMMON = ("401", "403")

paths = {
  "/ws": {"get": op("WebSocket upgrade (the client protocol)", {
      "101": {"description": "switching protocols"},
      **errors("400", "401"), "403": {**ERR, "description": "origin not allowed"}},
      params=[query_param("token", "JWT (or Authorization: Bearer, or a first `auth` message)"),
              query_param("project_id", "subscribe project:P after authentication"),
              query_param("board_id", "subscribe board:B after authentication"),
              query_param("encoding", "json (default)"),
              query_param("resume", "JSON {\"<stream>\": {offset, epoch}}: resume the scope streams (PROTOCOL section 15)")],
      secured=False, tag="websocket")},
  "/ws/connect": {"get": op("Alias of /ws", {"101": {"description": "switching protocols"}, **errors("401")}, secured=False, tag="websocket")},
  "/ws/stats": {"get": op("Seed 001's connection stats", {"200": ok(ref("SeedStats")), **errors(*COMMON)}, tag="seed")},
  "/ws/broadcast": {"post": op("Seed 001's broadcast: system.alert to every connection",
      {"200": ok(ref("SeedBroadcastResult")), **errors("400", *COMMON, "413")},
      request=body(ref("SeedBroadcast")), tag="seed")},
  "/api/v1/publish": {"post": op("Publish an event to a scope",
      {"200": ok(ref("Published")), **errors("400", *COMMON, "413", "503")}, request=body(ref("Publish")),
      params=[{"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "maxLength": 255}, "description": "as the body's idempotency_key"}])},
  "/api/v1/publish/batch": {"post": op("Publish several events; one result per message, in order",
      {"200": ok({"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {"oneOf": [ref("Published"), ref("Error")]}}}}),
       **errors("400", *COMMON, "413")},
      request=body({"type": "object", "required": ["messages"], "properties": {"messages": {"type": "array", "maxItems": 1000, "items": ref("Publish")}}}))},
  "/api/v1/stats": {"get": op("What this node holds and has done", {"200": ok(ref("Stats")), **errors(*COMMON)})},
  "/api/v1/connections": {"get": op("Live connections", {"200": ok({"type": "array", "items": ref("Connection")}), **errors(*COMMON, "503")},
      params=[query_param("user", "only this user's"), query_param("project", "only this project's members'")])},
  "/api/v1/connections/count": {"get": op("Count live connections", {"200": ok({"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}), **errors(*COMMON, "503")},
      params=[query_param("user", "only this user's"), query_param("project", "only this project's members'"), query_param("topic", "only this topic's subscribers")])},
  "/api/v1/users/{id}/disconnect": {"post": op("Close every connection of a user (close 1000)", {"200": ok(ref("Disconnected")), **errors(*COMMON)}, params=[ID])},
  "/api/v1/projects/{id}/disconnect": {"post": op("Close every connection of a project's members (close 1000)", {"200": ok(ref("Disconnected")), **errors(*COMMON, "503")}, params=[ID])},
  "/api/v1/users/{id}/message": {"post": op("Send an event to every connection of a user",
      {"200": ok({"type": "object", "required": ["id", "recipients", "queued"], "properties": {"id": {"type": "string"}, "recipients": {"type": "integer"}, "queued": {"type": "boolean", "description": "stored in the user's offline inbox"}}}),
       **errors("400", *COMMON, "413", "503")}, request=body(ref("Message")), params=[ID])},
  "/api/v1/projects/{id}/message": {"post": op("Send an event to every member of a project",
      {"200": ok(ref("Published")), **errors("400", *COMMON, "413", "503")}, request=body(ref("Message")), params=[ID])},
  "/api/v1/projects/{id}/members": {"get": op("List a project's members (membership store)",
      {"200": ok({"type": "object", "required": ["project", "members"], "properties": {"project": {"type": "string"}, "members": {"type": "array", "items": {"type": "string"}}}}), **errors(*COMMON, "503")}, params=[ID])},
  "/api/v1/projects/{id}/members/{user_id}": {
      "put": op("Add a member", {"200": ok({"type": "object", "properties": {"project": {"type": "string"}, "user_id": {"type": "string"}, "added": {"type": "boolean"}}}), **errors(*COMMON, "503")}, params=[ID, path_param("user_id", "user id")]),
      "delete": op("Remove a member", {"200": ok({"type": "object", "properties": {"project": {"type": "string"}, "user_id": {"type": "string"}, "removed": {"type": "boolean"}}}), **errors(*COMMON, "503")}, params=[ID, path_param("user_id", "user id")])},
  "/api/v1/topics/{topic}/presence": {"get": op("Who is subscribed to a topic (namespaces with presence)",
      {"200": ok({"type": "object", "properties": {"topic": {"type": "string"}, "users": {"type": "array", "items": {"type": "object", "properties": {"user_id": {"type": "string"}, "connections": {"type": "integer"}, "joined_at": {"type": "string"}}}}}}), **errors("400", *COMMON, "404")}, params=[TOPIC])},
  "/api/v1/topics/{topic}/history": {"get": op("A topic's stream (namespaces with history)",
      {"200": ok({"type": "object", "properties": {"topic": {"type": "string"}, "epoch": {"type": "string"}, "offset": {"type": "integer"}, "messages": {"type": "array", "items": {"type": "object"}}}}), **errors("400", *COMMON, "404")},
      params=[TOPIC, query_param("since", "offset to read after", {"type": "integer"}), query_param("limit", "at most this many (default 100, max 1000)", {"type": "integer"})])},
  "/api/v1/openapi.json": {"get": op("This document", {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}, secured=False, tag="ops")},
  "/health": {"get": op("Liveness", {"200": ok({"type": "object", "properties": {"status": {"const": "ok"}}})}, secured=False, tag="ops")},
  "/ready": {"get": op("Readiness: the engines answer", {"200": ok({"type": "object", "properties": {"status": {"const": "ready"}}}), "503": {"description": "an engine does not answer"}}, secured=False, tag="ops")},
  "/metrics": {"get": op("Prometheus metrics (herald_*)", {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}}, secured=False, tag="ops")},
}

schemas = {
  "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
      "code": {"type": "string", "enum": ["invalid_message", "unauthorized", "forbidden", "not_found", "message_too_large", "processing_error"]},
      "message": {"type": "string"}}}}},
  "Publish": {"type": "object", "required": ["scope", "type"], "properties": {
      "scope": {"type": "string", "enum": ["all", "user", "role", "project", "topic"]},
      "target": {"type": ["string", "integer"], "description": "user id, role, project id or topic; omitted for all"},
      "type": {"type": "string", "description": "event name clients receive as `type`"},
      "data": {"description": "any JSON; default {}"},
      "idempotency_key": {"type": ["string", "integer"], "description": "1 to 255 bytes: a repeat within [recovery] idempotency_window gets the first answer and is not delivered again (or the header Idempotency-Key)"}}},
  "Published": {"type": "object", "required": ["id", "recipients"], "properties": {
      "id": {"type": "string", "description": "UUID v7, the same on every copy"},
      "recipients": {"type": "integer", "description": "connections it was queued to"},
      "offset": {"type": "integer"}}},
  "Message": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}, "data": {}}},
  "Stats": {"type": "object", "required": ["total_clients", "by_role", "users", "topics", "messages_sent", "messages_received", "slow_consumers_dropped", "uptime_s"], "properties": {
      "total_clients": {"type": "integer"}, "by_role": {"type": "object", "additionalProperties": {"type": "integer"}},
      "users": {"type": "integer"}, "topics": {"type": "integer"},
      "messages_sent": {"type": "integer"}, "messages_received": {"type": "integer"},
      "slow_consumers_dropped": {"type": "integer"}, "uptime_s": {"type": "integer"},
      "nodes": {"type": "array", "items": {"type": "object"}}}},
  "Connection": {"type": "object", "required": ["client_id", "user_id", "role", "remote_addr", "connected_at", "topics"], "properties": {
      "client_id": {"type": "string"}, "user_id": {"type": "string"}, "role": {"type": "string"},
      "remote_addr": {"type": ["string", "null"]}, "connected_at": {"type": "string"},
      "topics": {"type": "array", "items": {"type": "string"}}}},
  "Disconnected": {"type": "object", "required": ["disconnected"], "properties": {"disconnected": {"type": "integer"}}},
  "SeedStats": {"type": "object", "properties": {"total_clients": {"type": "integer"}, "by_role": {"type": "object", "additionalProperties": {"type": "integer"}}, "timestamp": {"type": "string"}}},
  "SeedBroadcast": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}, "priority": {"type": "string", "default": "normal"}, "metadata": {}}},
  "SeedBroadcastResult": {"type": "object", "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}, "recipients": {"type": "integer"}, "stats": ref("SeedStats")}},
}

doc = {
  "openapi": "3.1.0",
  "info": {"title": "Herald server API", "version": "1", "description": "Publish to WebSocket clients and operate a Herald node. Errors are {\"error\": {\"code\", \"message\"}}."},
  "paths": paths,
  "components": {"schemas": schemas, "securitySchemes": {
      "apiKey": {"type": "http", "scheme": "bearer", "description": "the configured API key"},
      "adminJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "a JWT whose role is admin or superadmin"}}},
}
out = pathlib.Path(__file__).resolve().parent.parent / "crates/herald/src/http/openapi.json"
out.write_text(json.dumps(doc, indent=1) + "\n")
print(f"wrote {out}")
