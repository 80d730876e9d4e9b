"""A minimal xfer client written from PROTOCOL.md alone, with Python's
standard library: TLS 1.3 with ALPN xfer/2, the token proofs bound to the
server's certificate (tls-server-end-point), then two puts (one of a
single part, one of three) and an ls.

    python3 client.py HOST PORT TOKEN NAME CONTENT
"""

import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys


def send(sock, header, body=b""):
    header.setdefault("filename", "")
    header.setdefault("md5", None)
    header["total_size"] = len(body)
    raw = json.dumps(header).encode()
    sock.sendall(struct.pack(">I", len(raw)) + raw + body)


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def recv(sock):
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    header = json.loads(recv_exact(sock, n))
    body = recv_exact(sock, header.get("total_size", 0))
    return header, body


PART = 128 * 1024


def file_digest(data):
    parts = [data[i:i + PART] for i in range(0, len(data), PART)]
    if len(parts) <= 1:
        return hashlib.md5(data).hexdigest()
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return "%s-%d" % (hashlib.md5(joined).hexdigest(), len(parts))


def mac(token, label, binding, ns, nc):
    parts = [label.encode(), binding, ns.encode(), nc.encode()]
    msg = b"".join(struct.pack(">I", len(p)) + p for p in parts)
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def main():
    host, port, token, name, content = sys.argv[1:6]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["xfer/2"])
    sock = ctx.wrap_socket(socket.create_connection((host, int(port))))
    assert sock.selected_alpn_protocol() == "xfer/2", sock.selected_alpn_protocol()
    binding = hashlib.sha256(sock.getpeercert(binary_form=True)).digest()

    hello, _ = recv(sock)
    assert hello["op"] == "hello" and hello["version"] == 6, hello
    ns, nc = hello["nonce"], os.urandom(32).hex()
    send(sock, {"op": "auth", "nonce": nc, "mac": mac(token, "xfer/2 client", binding, ns, nc)})
    welcome, _ = recv(sock)
    if welcome["op"] != "welcome":
        print("refused:", welcome.get("code"))
        return 1
    expected = mac(token, "xfer/2 server", binding, ns, nc)
    if not hmac.compare_digest(welcome["mac"], expected):
        print("the server did not prove the token")
        return 1

    put(sock, name, content.encode())
    # And one of three parts: 300,000 bytes of i % 251.
    put(sock, name + ".big", bytes(i % 251 for i in range(300000)))

    send(sock, {"op": "ls", "filename": ""})
    while True:
        entry, _ = recv(sock)
        if entry["op"] == "end":
            break
        print(entry["kind"], entry["filename"], entry["size"])
    return 0


def put(sock, name, data):
    send(sock, {"op": "put", "filename": name, "size": len(data), "force": True})
    ready, _ = recv(sock)
    assert ready["op"] == "ready", ready
    # The body as parts of 128 KiB, each with its MD5; the file's digest is
    # over the parts' digests (the plain MD5 for one part).
    parts = [data[i:i + PART] for i in range(0, len(data), PART)] or [b""]
    for i, part in enumerate(parts):
        md5 = hashlib.md5(part).hexdigest()
        send(sock, {"op": "data", "filename": name, "offset": i * PART, "md5": md5}, part)
    digest = file_digest(data)
    send(sock, {"op": "done", "filename": name, "md5": digest})
    ok, _ = recv(sock)
    assert ok["op"] == "ok" and ok["md5"] == digest, ok
    print("stored", name, digest)


if __name__ == "__main__":
    sys.exit(main())
