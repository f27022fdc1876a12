"""A webhook receiver on loopback for the alert tests. Records every POST to DIR/requests.jsonl.
Requests to /dingtalk/... are checked the way DingTalk checks them, independently of flowhealth:
sign == Base64(HMAC-SHA256(key=secret, msg="<timestamp>\\n<secret>")) and the timestamp within
an hour; the reply is {"errcode": 0} or DingTalk's 310000 "sign not match".

    python3 webhook_server.py DIR PORT SECRET [--fail-first N]

The first N requests get HTTP 500 (to exercise retries). Prints READY when it listens."""

import argparse
import base64
import hashlib
import hmac
import json
import pathlib
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("port", type=int)
    parser.add_argument("secret")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    log = pathlib.Path(args.dir) / "requests.jsonl"
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            state["seen"] += 1
            record = {"path": url.path, "query": query, "body": json.loads(body or b"null")}
            if state["seen"] <= args.fail_first:
                status, payload = 500, {"error": "try again"}
            elif url.path.startswith("/dingtalk"):
                timestamp = query.get("timestamp", "")
                expected = base64.b64encode(hmac.new(
                    args.secret.encode(), f"{timestamp}\n{args.secret}".encode(), hashlib.sha256).digest()).decode()
                fresh = timestamp.isdigit() and abs(time.time() * 1000 - int(timestamp)) < 3600_000
                record["sign_ok"] = fresh and hmac.compare_digest(expected, query.get("sign", ""))
                status, payload = 200, ({"errcode": 0, "errmsg": "ok"} if record["sign_ok"]
                                        else {"errcode": 310000, "errmsg": "sign not match"})
            else:
                status, payload = 200, {"ok": True}
            record["answer"] = status
            # Logged before the reply: a client that has its answer finds its request in the log.
            with log.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.reply(status, payload)

        def reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
