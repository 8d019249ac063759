"""An HTTPS page of another site that embeds a load balancer's page in an iframe: where a
browser sends only SameSite=None cookies (the CORS twin), partitioned by this top-level site.

Usage: embedding_page.py PORT CERT_CHAIN_FILE KEY_FILE FRAME_URL   (serves until killed)
"""
import http.server
import ssl
import sys

port, chain, key, frame = sys.argv[1:5]
page = f'<!doctype html><title>embedding</title><iframe id="shop" src="{frame}"></iframe>'.encode()


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(port)), Page)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(chain, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
server.serve_forever()
