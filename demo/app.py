"""The seed's app: Flask with server-side sessions (Flask-Session) behind the bouncer, one per
VM. Each VM keeps its sessions on its own disk, so a session only lives on the VM that started
it: the load balancer must keep the client there (app cookie stickiness on `session`).

/        which VM answered, who is logged in and the session's visit count (JSON)
/login   starts a session (Flask-Session sets the `session` cookie: a server-side session id)
/logout  ends it (the cookie is deleted)
/health  ok, for the load balancer's health check
/client  what the load balancer told the app of its client: X-Forwarded-For, -Proto, -Port (JSON)

Run: VM_NAME=vm1 SESSION_DIR=/tmp/vm1 gunicorn --bind 127.0.0.1:9001 --chdir demo app:app
"""
import os
import secrets

from cachelib.file import FileSystemCache
from flask import Flask, jsonify, request, session
from flask_session import Session

VM_NAME = os.environ.get("VM_NAME", "vm")

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
    SESSION_TYPE="cachelib",
    SESSION_CACHELIB=FileSystemCache(os.environ.get("SESSION_DIR", f"/tmp/sticky-demo-sessions-{VM_NAME}"), threshold=10_000),
    SESSION_PERMANENT=False,
)
Session(app)


@app.get("/")
def index():
    if "user" in session:
        session["visits"] = session.get("visits", 0) + 1
    return jsonify(target=VM_NAME, user=session.get("user"), visits=session.get("visits", 0))


@app.get("/login")
def login():
    session["user"] = "demo"
    session["visits"] = 0
    return jsonify(target=VM_NAME, login=True)


@app.get("/logout")
def logout():
    session.clear()
    return jsonify(target=VM_NAME, logout=True)


@app.get("/client")
def client():
    forwarded = {name: request.headers.get(name) for name in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port")}
    return jsonify(target=VM_NAME, **forwarded)


@app.get("/health")
def health():
    return "ok"
