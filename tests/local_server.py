"""An HTTP server on a free 127.0.0.1 port, for the download paths: tests never reach the network."""

import http.server
import threading


class LocalServer:
    """http.server on a free 127.0.0.1 port: path -> (body, Content-Length); a shorter body than announced is a
    connection that drops mid-file."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, int]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                body, length = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args) -> None:  # quiet test output
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        # polled every 20 ms: shutdown() waits one poll, 0.5 s by default
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def serve(self, file: str, body: bytes, length: int | None = None) -> None:
        self.routes["/" + file] = (body, len(body) if length is None else length)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
