"""The seed's app with Socket.IO (python-socketio in threading mode, for gunicorn's gthread
worker): real-time apps are the first reason stickiness is turned on. Engine.IO's long-polling
requests of one connection must all reach the VM that opened it, and so must the WebSocket it
upgrades to; the handshake sets Engine.IO's `io` cookie, which an app cookie policy can follow.

Socket.IO events: `whoami` answers the VM holding the connection; `echo` answers its data.
Plain HTTP requests go to the Flask app (app.py).

Run: VM_NAME=vm1 gunicorn --worker-class gthread --workers 1 --threads 100 \
       --bind 127.0.0.1:9001 --chdir demo realtime:app
(one worker per VM: Socket.IO's connections live in the worker that opened them)
"""
import socketio

from app import VM_NAME
from app import app as flask_app

sio = socketio.Server(async_mode="threading", cookie="io")
app = socketio.WSGIApp(sio, flask_app)


@sio.event
def whoami(sid):
    return VM_NAME


@sio.event
def echo(sid, data):
    return data
