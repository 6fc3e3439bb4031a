#!/usr/bin/env python3
# A test OTLP/HTTP logs receiver on 127.0.0.1 that decodes requests with the official
# OpenTelemetry protobuf definitions. Needs:
#   pip install --break-system-packages opentelemetry-proto
#
# Usage: otlp_receiver.py [--fail-first N] [--fail-status S]
# Prints "PORT <n>" once listening, then one JSON line per accepted request with the decoded
# resource attributes and log records (ids in hex). The first N requests are answered with
# status S (default 503) and printed as {"rejected": S}. Exits when stdin closes.

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return any_value.string_value
    if kind == "bool_value":
        return any_value.bool_value
    if kind == "int_value":
        return any_value.int_value
    if kind == "double_value":
        return {"double": any_value.double_value}
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    raise ValueError(f"unexpected AnyValue kind {kind}")


def attributes(key_values):
    out = {}
    for kv in key_values:
        if kv.key in out:
            raise ValueError(f"duplicate attribute {kv.key}")
        out[kv.key] = value(kv.value)
    return out


def decode(body):
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.ParseFromString(body)
    out = []
    for resource_logs in request.resource_logs:
        records = []
        scopes = []
        for scope_logs in resource_logs.scope_logs:
            scopes.append({"name": scope_logs.scope.name, "version": scope_logs.scope.version})
            for r in scope_logs.log_records:
                records.append(
                    {
                        "time_unix_nano": r.time_unix_nano,
                        "observed_time_unix_nano": r.observed_time_unix_nano,
                        "severity_number": r.severity_number,
                        "severity_text": r.severity_text,
                        "body": value(r.body) if r.HasField("body") else None,
                        "event_name": r.event_name,
                        "attributes": attributes(r.attributes),
                        "trace_id": r.trace_id.hex(),
                        "span_id": r.span_id.hex(),
                        "flags": r.flags,
                    }
                )
        out.append(
            {
                "resource": attributes(resource_logs.resource.attributes),
                "scopes": scopes,
                "records": records,
            }
        )
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=503)
    args = parser.parse_args()
    lock = threading.Lock()
    state = {"failures": args.fail_first}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                if self.path != "/v1/logs":
                    print(json.dumps({"wrong_path": self.path}), flush=True)
                    self.reply(404)
                    return
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    print(json.dumps({"wrong_content_type": self.headers.get("Content-Type")}), flush=True)
                    self.reply(415)
                    return
                if state["failures"] > 0:
                    state["failures"] -= 1
                    print(json.dumps({"rejected": args.fail_status}), flush=True)
                    self.reply(args.fail_status)
                    return
                try:
                    decoded = decode(body)
                except Exception as e:  # reported to the test, which fails on it
                    print(json.dumps({"decode_error": str(e)}), flush=True)
                    self.reply(400)
                    return
                print(json.dumps({"resource_logs": decoded}), flush=True)
                response = logs_service_pb2.ExportLogsServiceResponse()
                self.reply(200, response.SerializeToString())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
