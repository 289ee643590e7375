import socket, json, time, threading
def qmp(path):
    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile('rw')
    f.readline(); f.write(json.dumps({"execute":"qmp_capabilities"})+"\n"); f.flush(); f.readline()
    def cmd(c, a=None):
        f.write(json.dumps({"execute":c, **({"arguments":a} if a else {})})+"\n"); f.flush()
        while True:
            l = json.loads(f.readline())
            if 'return' in l or 'error' in l: return l
    return cmd
src = qmp('/tmp/qsrc.sock')
stop = False
def blast():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while not stop:
        try: u.sendto(b'x'*64, ('127.0.0.1', 5555))
        except Exception: pass
        time.sleep(0.001)
t = threading.Thread(target=blast); t.start()
src("migrate-set-parameters", {"max-bandwidth": 24*1024*1024, "downtime-limit": 100})
src('migrate', {"uri": "tcp:127.0.0.1:4444"})
while True:
    r = src('query-migrate')['return']
    if r.get('status') in ('completed','failed'): print(r.get('status'), r.get('total-time')); break
    time.sleep(0.2)
time.sleep(2); stop = True; t.join()
