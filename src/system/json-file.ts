/** Small JSON files a daemon keeps beside it: read whole or not at all, written whole or not at all. */
import fs from 'node:fs';

/** The file's JSON, or undefined when it is missing or not JSON. */
export function readJsonFile<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** Writes `text` to a file beside `file`, then renames it over: a reader sees the old text or the new, never half. */
export function writeFileAtomic(file: string, text: string, mode?: number): void {
  fs.writeFileSync(file + '.tmp', text, mode === undefined ? {} : { mode });
  fs.renameSync(file + '.tmp', file);
}
