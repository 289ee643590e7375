/**
 * A real client of a VM's counter stream (the built-in guest's `tcp`
 * workload: "1\n2\n3\n…", 100 lines a second on port 7000), run inside the
 * lab's client namespace:
 *
 *   ip netns exec <client> node dist/src/lab/stream-check.js HOST PORT SECONDS
 *
 * It reads for SECONDS, reconnecting if the connection breaks, and prints one
 * JSON line: how many numbers arrived, the last, gaps (a number that did not
 * follow the one before), reconnects, and the longest silence in ms.
 */
import net from 'node:net';

export interface StreamCheck {
  received: number;
  last: number;
  gaps: number;
  reconnects: number;
  longestSilenceMs: number;
}

export function checkStream(host: string, port: number, seconds: number): Promise<StreamCheck> {
  const out: StreamCheck = { received: 0, last: 0, gaps: 0, reconnects: 0, longestSilenceMs: 0 };
  const end = Date.now() + seconds * 1000;
  let connections = 0;
  let lastData = 0;
  return new Promise((resolve) => {
    const connect = () => {
      if (Date.now() >= end) return resolve(out);
      let partial = '';
      let expect = 0;
      const s = net.connect({ host, port });
      s.setNoDelay(true);
      s.on('connect', () => {
        if (connections++ > 0) out.reconnects++;
        lastData = Date.now();
      });
      s.on('data', (d: Buffer) => {
        const now = Date.now();
        out.longestSilenceMs = Math.max(out.longestSilenceMs, now - lastData);
        lastData = now;
        const lines = (partial + d.toString()).split('\n');
        partial = lines.pop()!;
        for (const l of lines) {
          const n = Number(l);
          // Each connection's stream starts at 1.
          if (expect !== 0 && n !== expect) out.gaps++;
          expect = n + 1;
          out.last = n;
          out.received++;
        }
      });
      const timer = setTimeout(() => s.destroy(), Math.max(0, end - Date.now()));
      s.on('close', () => {
        clearTimeout(timer);
        setTimeout(connect, Date.now() >= end ? 0 : 100);
      });
      s.on('error', () => {});
    };
    connect();
  });
}

if (process.argv[1]?.endsWith('stream-check.js')) {
  const [host, port, seconds] = process.argv.slice(2);
  if (!host || !port || !seconds) {
    process.stderr.write('usage: stream-check.js HOST PORT SECONDS\n');
    process.exit(2);
  }
  void checkStream(host, Number(port), Number(seconds)).then((r) => process.stdout.write(JSON.stringify(r) + '\n'));
}
