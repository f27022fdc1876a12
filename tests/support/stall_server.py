"""A server on loopback that accepts connections and then stalls, for the deadline tests: a client
without a deadline of its own would wait on it for as long as the socket lives.

    python3 stall_server.py PORT MODE

MODE:
  silent            accept, read what the client sends, never answer (an HTTP server or S3 that hangs)
  smtp-after-ehlo   greet and answer EHLO (offering AUTH), then never answer the next command
  smtp-after-auth   the same, and answer nothing once the client starts AUTH
  echo-500          answer every HTTP request at once with 500 and a body echoing the request
                    line (a receiver that repeats the URL it was called with, token and all)

Prints READY when it listens. Connections are held open until the process is killed."""

import socket
import sys
import threading


def serve(conn, mode):
    held = []
    try:
        if mode == "silent":
            while conn.recv(65536):
                pass
        elif mode == "echo-500":
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            line = request.split(b"\r\n", 1)[0]
            body = b'{"error": "internal", "request": "' + line.replace(b'"', b"'") + b'"}'
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        else:
            conn.sendall(b"220 127.0.0.1 ESMTP stalling\r\n")
            reader = conn.makefile("rb")
            for line in reader:
                command = line.strip().upper()
                if command.startswith(b"EHLO") or command.startswith(b"HELO"):
                    conn.sendall(b"250-127.0.0.1\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
                    continue
                if mode == "smtp-after-auth" and not command.startswith(b"AUTH"):
                    conn.sendall(b"250 OK\r\n")
                    continue
                break  # stall: read nothing more, answer nothing
            held.append(reader)
            threading.Event().wait()
    except OSError:
        pass


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("READY", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
