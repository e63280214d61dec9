"""8 concurrent uploads whose safetensors headers declare 90 MB each; prints the statuses and the
server's peak RSS (VmHWM). Usage: python3 scripts/header_flood.py PORT PID (root, or the server's user)."""
import socket, sys, threading, time, json, struct
port, pid = int(sys.argv[1]), int(sys.argv[2])
HEADER = 90_000_000
pad = "x" * (HEADER - 200)
header = json.dumps({"__metadata__": {"pad": pad}, "w": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}}).encode()
header += b" " * ((8 - len(header) % 8) % 8)
body = struct.pack("<Q", len(header)) + header + bytes(16)
statuses = []
def upload(i):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PUT /api/v1/models?name=h{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    try:
        view = memoryview(body)
        for off in range(0, len(body), 1 << 20):
            s.sendall(view[off:off + (1 << 20)])
    except OSError:
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
    except OSError:
        pass
    statuses.append(data.split(b" ", 2)[1].decode() if data else "closed")
with open(f"/proc/{pid}/clear_refs", "w") as f: f.write("5")
threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
t0 = time.time()
[t.start() for t in threads]; [t.join() for t in threads]
hwm = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0].split()[1]
print(f"statuses {sorted(statuses)}; peak RSS {int(hwm)//1024} MiB; {time.time()-t0:.1f} s")
