"""A webhook receiver on loopback for the alert and report tests. Records every POST to
DIR/requests.jsonl. Each vendor's requests are checked the way the vendor documents it, and
independently of flowhealth (this file is written from the vendors' pages, not from the Rust):

- /dingtalk/...  DingTalk group robot (open.dingtalk.com/document/robots/custom-robot-access and
  /customize-robot-security-settings): the query has `access_token`, `timestamp` (milliseconds,
  within an hour) and `sign` == Base64(HMAC-SHA256(key=secret, msg="<timestamp>\\n<secret>"));
  the body is {"msgtype": "markdown", "markdown": {"title", "text"}, "at": {...}} (or text).
  Reply {"errcode": 0} or DingTalk's 310000 "sign not match" / 300001 for a bad body.
- /wecom/...     WeCom group robot (developer.work.weixin.qq.com/document/path/91770): the
  query has `key`; {"msgtype": "markdown", "markdown": {"content" <= 4096 bytes}} or
  {"msgtype": "text", "text": {"content" <= 2048 bytes, "mentioned_list": [str],
  "mentioned_mobile_list": [str]}}. Reply {"errcode": 0, "errmsg": "ok"}, 93000 without a key,
  40058 for content too long, 44004 for a malformed body.
- /feishu/...    Feishu / Lark custom bot (open.feishu.cn/document/client-docs/bot-v3/add-custom-bot):
  the body has `timestamp` (seconds, within an hour) and
  `sign` == Base64(HMAC-SHA256(key="<timestamp>\\n<secret>", msg=b"")), and `msg_type` "text"
  ({"content": {"text"}}) or "post" ({"content": {"post": {lang: {"title", "content": [[tag,
  ...]]}}}} with tags text{text}, a{text, href}, at{user_id}). Reply {"code": 0, "msg":
  "success"}, 19021 for a bad signature, 9499 for a bad body.
- /slack/...     Slack incoming webhook (api.slack.com/messaging/webhooks, Block Kit limits):
  {"text": str, "blocks": [<= 50; header: plain_text <= 150 chars; section: mrkdwn <= 3000]}.
  Reply 200 "ok", or 400 "invalid_payload" / "invalid_blocks".
- anything else: recorded, 200 {"ok": true}.

Each record has `shape_ok` (the body is the vendor's shape) and, for signed vendors, `sign_ok`.

    python3 webhook_server.py DIR PORT SECRET [--feishu-secret S] [--fail-first N]

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


def fresh(timestamp, unit):
    """A timestamp (digits) within an hour of now, in `unit` seconds (1 or 0.001)."""
    return timestamp.isdigit() and abs(time.time() - int(timestamp) * unit) < 3600


def is_str_list(value):
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def dingtalk(query, body, secret, record):
    timestamp = query.get("timestamp", "")
    expected = base64.b64encode(hmac.new(
        secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()).decode()
    record["sign_ok"] = fresh(timestamp, 0.001) and hmac.compare_digest(expected, query.get("sign", ""))
    shape = isinstance(body, dict) and "access_token" in query
    if shape and body.get("msgtype") == "markdown":
        md = body.get("markdown", {})
        shape = isinstance(md.get("title"), str) and isinstance(md.get("text"), str)
    elif shape and body.get("msgtype") == "text":
        shape = isinstance(body.get("text", {}).get("content"), str)
    else:
        shape = False
    at = body.get("at", {}) if isinstance(body, dict) else {}
    shape = shape and is_str_list(at.get("atUserIds", [])) and is_str_list(at.get("atMobiles", []))
    record["shape_ok"] = shape
    if not record["sign_ok"]:
        return 200, {"errcode": 310000, "errmsg": "sign not match"}
    if not shape:
        return 200, {"errcode": 300001, "errmsg": "param error"}
    return 200, {"errcode": 0, "errmsg": "ok"}


def wecom(query, body, record):
    kind = body.get("msgtype") if isinstance(body, dict) else None
    if kind == "markdown":
        content = body.get("markdown", {}).get("content")
        shape, limit = isinstance(content, str), 4096
    elif kind == "text":
        text = body.get("text", {})
        content = text.get("content")
        shape = (isinstance(content, str) and is_str_list(text.get("mentioned_list", []))
                 and is_str_list(text.get("mentioned_mobile_list", [])))
        limit = 2048
    else:
        content, shape, limit = None, False, 0
    record["shape_ok"] = shape and len(content.encode()) <= limit
    if not query.get("key"):
        return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
    if not shape:
        return 200, {"errcode": 44004, "errmsg": "invalid message"}
    if len(content.encode()) > limit:
        return 200, {"errcode": 40058, "errmsg": "content exceed max length"}
    return 200, {"errcode": 0, "errmsg": "ok"}


def feishu_tags_ok(paragraphs):
    if not isinstance(paragraphs, list):
        return False
    for paragraph in paragraphs:
        if not isinstance(paragraph, list):
            return False
        for tag in paragraph:
            kind = tag.get("tag") if isinstance(tag, dict) else None
            if kind == "text":
                ok = isinstance(tag.get("text"), str)
            elif kind == "a":
                ok = isinstance(tag.get("text"), str) and isinstance(tag.get("href"), str)
            elif kind == "at":
                ok = isinstance(tag.get("user_id"), str)
            else:
                ok = False
            if not ok:
                return False
    return True


def feishu(body, secret, record):
    body = body if isinstance(body, dict) else {}
    timestamp = str(body.get("timestamp", ""))
    key = f"{timestamp}\n{secret}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    record["sign_ok"] = fresh(timestamp, 1) and hmac.compare_digest(expected, str(body.get("sign", "")))
    kind = body.get("msg_type")
    content = body.get("content", {})
    if kind == "text":
        shape = isinstance(content.get("text"), str)
    elif kind == "post":
        posts = content.get("post", {})
        shape = bool(posts) and all(
            isinstance(p.get("title"), str) and feishu_tags_ok(p.get("content")) for p in posts.values())
    else:
        shape = False
    record["shape_ok"] = shape
    if not record["sign_ok"]:
        return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
    if not shape:
        return 200, {"code": 9499, "msg": "Bad Request"}
    return 200, {"code": 0, "msg": "success", "data": {}}


def slack(body, record):
    body = body if isinstance(body, dict) else {}
    blocks = body.get("blocks", [])
    shape = isinstance(body.get("text"), str) and isinstance(blocks, list) and len(blocks) <= 50
    for block in blocks if shape else []:
        text = block.get("text", {}) if isinstance(block, dict) else {}
        if block.get("type") == "header":
            shape = shape and text.get("type") == "plain_text" and len(text.get("text", "")) <= 150
        elif block.get("type") == "section":
            shape = shape and text.get("type") == "mrkdwn" and 0 < len(text.get("text", "")) <= 3000
        else:
            shape = False
    record["shape_ok"] = shape
    return (200, "ok") if shape else (400, "invalid_blocks")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("port", type=int)
    parser.add_argument("secret")
    parser.add_argument("--feishu-secret")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    feishu_secret = args.feishu_secret or args.secret
    log = pathlib.Path(args.dir) / "requests.jsonl"
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            state["seen"] += 1
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                parsed = None
            record = {"path": url.path, "query": query, "body": parsed}
            if state["seen"] <= args.fail_first:
                status, payload = 500, {"error": "try again"}
            elif url.path.startswith("/dingtalk"):
                status, payload = dingtalk(query, parsed, args.secret, record)
            elif url.path.startswith("/wecom"):
                status, payload = wecom(query, parsed, record)
            elif url.path.startswith("/feishu"):
                status, payload = feishu(parsed, feishu_secret, record)
            elif url.path.startswith("/slack"):
                status, payload = slack(parsed, record)
            else:
                status, payload = 200, {"ok": True}
            record["answer"] = status
            # Logged before the reply: a client that has its answer finds its request in the log.
            with log.open("a") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.reply(status, payload)

        def reply(self, status, payload):
            if isinstance(payload, str):
                data, kind = payload.encode(), "text/plain"
            else:
                data, kind = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
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
