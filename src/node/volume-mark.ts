/** The shared volume's marker, read back by every host: proof it sees the cluster's volume (written by the controller). */
import fs from 'node:fs';
import path from 'node:path';
import { VOLUME_MARKER, type VolumeSighting } from '../domain/records.js';

/** The shared volume's marker as this host sees it; a missing or unreadable one says why, in one line. */
export function readVolumeMark(shared: string): VolumeSighting {
  const file = path.join(shared, VOLUME_MARKER);
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as { clusterId?: unknown; mark?: unknown };
    if (typeof m.clusterId !== 'string' || typeof m.mark !== 'string') return { error: `${file} is not a Ferry volume marker` };
    return { clusterId: m.clusterId.slice(0, 64), mark: m.mark.slice(0, 64) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return {
      error:
        code === 'ENOENT' ? `${file} does not exist (is the shared volume mounted at ${shared}?)` : `cannot read ${file}: ${code ?? String(e)}`.slice(0, 300),
    };
  }
}
