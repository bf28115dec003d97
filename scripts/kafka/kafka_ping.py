#!/usr/bin/env python3
"""Ask a Kafka-protocol broker whether it is ready, with the standard library only.

    kafka_ping.py HOST:PORT [--timeout SECONDS]

Sends ApiVersions (v0) and Metadata (v0) requests over one TCP connection. Exits 0 and
prints one line (API count, advertised brokers) when both answer without error, 1 if not.
Used by scripts/kafka/broker to wait for a started broker; needs no Kafka client library.
"""
import socket
import struct
import sys


def request(sock, api_key, correlation_id, body=b""):
    client_id = b"postroad-ping"
    header = struct.pack(">hhih", api_key, 0, correlation_id, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    data = recv_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != correlation_id:
        raise ValueError("correlation id mismatch")
    return data[4:]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return buf


def api_versions(sock):
    data = request(sock, 18, 1)
    error, count = struct.unpack(">hi", data[:6])
    if error != 0:
        raise ValueError(f"ApiVersions error code {error}")
    return count


def metadata_brokers(sock):
    # Metadata v0 with an empty topic list (all topics); only the broker list is read.
    data = request(sock, 3, 2, struct.pack(">i", 0))
    count = struct.unpack(">i", data[:4])[0]
    pos, brokers = 4, []
    for _ in range(count):
        node, hlen = struct.unpack(">ih", data[pos:pos + 6])
        pos += 6
        host = data[pos:pos + hlen].decode()
        pos += hlen
        port = struct.unpack(">i", data[pos:pos + 4])[0]
        pos += 4
        brokers.append(f"{node}@{host}:{port}")
    return brokers


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    timeout = 3.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    host, _, port = args[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            apis = api_versions(sock)
            brokers = metadata_brokers(sock)
    except (OSError, ValueError, struct.error) as err:
        print(f"not ready: {err}", file=sys.stderr)
        return 1
    if not brokers:
        print("not ready: metadata lists no broker", file=sys.stderr)
        return 1
    print(f"ready: {apis} APIs, brokers {' '.join(brokers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
