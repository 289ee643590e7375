/**
 * A writer for the "newc" cpio format the Linux kernel unpacks as an
 * initramfs: a 110-byte ASCII header, the name, the data, each padded to 4.
 */
export class CpioWriter {
  private readonly chunks: Buffer[] = [];
  private ino = 1;

  dir(name: string, mode = 0o755): void {
    this.entry(name, 0o040000 | mode, Buffer.alloc(0));
  }

  file(name: string, data: Buffer, mode = 0o644): void {
    this.entry(name, 0o100000 | mode, data);
  }

  finish(): Buffer {
    this.entry('TRAILER!!!', 0, Buffer.alloc(0));
    return Buffer.concat(this.chunks);
  }

  private entry(name: string, mode: number, data: Buffer): void {
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    const nameBytes = Buffer.from(name + '\0');
    const header =
      '070701' +
      hex(name === 'TRAILER!!!' ? 0 : this.ino++) +
      hex(mode) +
      hex(0) + // uid
      hex(0) + // gid
      hex(1) + // nlink
      hex(0) + // mtime
      hex(data.length) +
      hex(0) +
      hex(0) + // dev major/minor
      hex(0) +
      hex(0) + // rdev major/minor
      hex(nameBytes.length) +
      hex(0); // check
    this.chunks.push(Buffer.from(header, 'ascii'), nameBytes);
    this.pad(110 + nameBytes.length);
    this.chunks.push(data);
    this.pad(data.length);
  }

  private pad(length: number): void {
    const rest = (4 - (length % 4)) % 4;
    if (rest) this.chunks.push(Buffer.alloc(rest));
  }
}
