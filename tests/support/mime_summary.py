"""Parses a message with Python's email package (a real MIME parser) and prints a JSON summary:
headers, the MIME tree, the text and HTML bodies, inline parts by Content-ID, attachments.

    python3 mime_summary.py MESSAGE.eml"""

import json
import sys
from email import policy
from email.parser import BytesParser


def main():
    with open(sys.argv[1], "rb") as f:
        message = BytesParser(policy=policy.default).parse(f)
    tree, inline, attachments = [], {}, {}

    def walk(part, depth):
        tree.append("  " * depth + part.get_content_type())
        if part.is_multipart():
            for child in part.iter_parts():
                walk(child, depth + 1)
            return
        cid = part.get("Content-ID")
        if part.get_content_disposition() == "attachment":
            attachments[part.get_filename()] = part.get_content().decode() if part.get_content_maintype() == "text" \
                and isinstance(part.get_content(), bytes) else str(part.get_content())
        elif cid:
            inline[cid.strip("<>")] = {"type": part.get_content_type(), "bytes": len(part.get_content())}

    walk(message, 0)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    print(json.dumps({
        "subject": str(message["Subject"]),
        "from": str(message["From"]),
        "to": str(message["To"]),
        "message_id": str(message["Message-ID"]),
        "header_names": [k for k in message.keys()],
        "tree": tree,
        "text": text.get_content() if text else None,
        "html": html.get_content() if html else None,
        "inline": inline,
        "attachments": attachments,
    }))


if __name__ == "__main__":
    main()
