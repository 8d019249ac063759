"""A WebSocket over HTTP/2 (RFC 8441 extended CONNECT, cleartext HTTP/2 with prior knowledge) to
a Socket.IO server, as the tests drive it: opens `/socket.io/?EIO=4&transport=websocket` with
the Cookie header given, connects Socket.IO, emits `whoami` COUNT times on the one stream and
prints one JSON line: {"status": ..., "targets": [...]} or {"error": ...}.

Usage: websocket_h2.py HOST PORT COUNT [COOKIE-HEADER]
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cookie = sys.argv[4] if len(sys.argv) > 4 else ""


class Session:
    def __init__(self):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()
        self.ws = Connection(ConnectionType.CLIENT)
        self.stream = None
        self.status = None
        self.texts = []
        self.settled = False

    def flush(self):
        self.sock.sendall(self.h2.data_to_send())

    def pump(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the connection closed")
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settled = True
            elif isinstance(event, h2.events.ResponseReceived):
                self.status = dict(event.headers).get(b":status", b"").decode()
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.ws.receive_data(event.data)
                for message in self.ws.events():
                    if isinstance(message, TextMessage):
                        self.texts.append(message.data)
                    elif isinstance(message, Ping):
                        self.send(message.response())
            elif isinstance(event, h2.events.StreamReset):
                raise ConnectionError(f"stream reset ({event.error_code})")
        self.flush()

    def open(self):
        while not self.settled:
            self.pump()
        self.stream = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/socket.io/?EIO=4&transport=websocket"),
            (":authority", f"{host}:{port}"),
            ("sec-websocket-version", "13"),
        ]
        if cookie:
            headers.append(("cookie", cookie))
        self.h2.send_headers(self.stream, headers)
        self.flush()
        while self.status is None:
            self.pump()

    def send(self, event):
        self.h2.send_data(self.stream, self.ws.send(event))
        self.flush()

    def next_text(self):
        while not self.texts:
            self.pump()
        return self.texts.pop(0)


try:
    session = Session()
    session.open()
    if session.status != "200":
        print(json.dumps({"status": session.status}), flush=True)
        sys.exit(0)
    assert session.next_text().startswith("0"), "Engine.IO's open packet"
    session.send(TextMessage(data="40"))
    assert session.next_text().startswith("40"), "Socket.IO's connect"
    targets = []
    for n in range(count):
        session.send(TextMessage(data=f'42{n}["whoami"]'))
        answer = session.next_text()
        while answer == "2":  # Engine.IO's ping
            session.send(TextMessage(data="3"))
            answer = session.next_text()
        targets.append(json.loads(answer[len(f"43{n}"):])[0])
    print(json.dumps({"status": session.status, "targets": targets}), flush=True)
except Exception as error:
    print(json.dumps({"error": repr(error)}), flush=True)
