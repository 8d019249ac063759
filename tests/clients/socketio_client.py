"""A python-socketio client the tests drive: it connects to URL with the transports given
(`polling,websocket`: long-polling, then the upgrade; `websocket`: WebSocket only) and the
Cookie header given, prints one JSON line, then answers one JSON line per command it reads:

  whoami   which VM holds the connection, the transport in use and how many times it connected
  quit     disconnects and exits (the tests kill it instead, as a closed browser tab)

Usage: socketio_client.py URL TRANSPORTS [COOKIE-HEADER]
"""
import json
import sys

import socketio

url, transports = sys.argv[1], sys.argv[2].split(",")
cookie = sys.argv[3] if len(sys.argv) > 3 else ""
client = socketio.Client(reconnection=False)
connects = 0


@client.event
def connect():
    global connects
    connects += 1


def say(**fields):
    print(json.dumps(fields), flush=True)


try:
    client.connect(url, transports=transports, headers={"Cookie": cookie} if cookie else {}, wait_timeout=5)
except Exception as error:  # the test reads why
    say(error=repr(error))
    sys.exit(0)
say(connected=True, sid=client.get_sid())
for line in sys.stdin:
    command = line.strip()
    if command == "quit":
        break
    try:
        target = client.call("whoami", timeout=5)
        say(target=target, transport=client.transport(), connects=connects, connected=client.connected)
    except Exception as error:
        say(error=repr(error), connected=client.connected)
client.disconnect()
