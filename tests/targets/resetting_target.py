"""A target that resets every reused keep-alive connection: it answers the first request of a
connection and keeps it open, then resets it (RST, nothing answered) when a second request
arrives on it, the way a server whose keep-alive timeout ends as the proxy reuses the connection
does. Answers `{"target": ID}`; /health closes its connection after answering.

Usage: resetting_target.py ID PORT
"""
import json
import socket
import socketserver
import struct
import sys

target_id, port = sys.argv[1], int(sys.argv[2])


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        connection = self.request
        buffered = b""
        answered = 0
        while True:
            while b"\r\n\r\n" not in buffered:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                buffered += chunk
            head, buffered = buffered.split(b"\r\n\r\n", 1)
            if answered:
                # SO_LINGER with a zero timeout: close() sends RST.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
                return
            path = head.split(b" ")[1] if b" " in head else b"/"
            health = path.startswith(b"/health")
            body = b"ok" if health else json.dumps({"target": target_id}).encode()
            closing = b"Connection: close\r\n" if health else b""
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n" + closing + b"\r\n" + body
            )
            if health:
                return
            answered += 1


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", port), Handler).serve_forever()
