/**
 * The image library with real qemu-img, a real ISO (xorriso) and a real
 * partitioned raw disk (sfdisk): the format comes from the bytes, not the
 * name; what is not an image, a chained qcow2, another format or a file
 * outside the storage roots is refused with one line and nothing recorded.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';

interface Image {
  name: string;
  format: string;
  file: string;
  virtualSizeBytes: number;
  sizeBytes: number;
  source: string;
}

describe('the image library', () => {
  let c: TestCluster;
  let incoming: string;
  before(async () => {
    c = await TestCluster.start({ nodes: 1 });
    incoming = path.join(c.layout.shared, 'incoming');
    fs.mkdirSync(incoming);
    const at = (f: string) => path.join(incoming, f);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', at('base.qcow2'), '64M']);
    // Names that lie: the format must come from the bytes.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', at('looks-raw.img'), '32M']);
    fs.writeFileSync(at('disk.raw'), Buffer.alloc(0));
    fs.truncateSync(at('disk.raw'), 16 << 20);
    execFileSync('sfdisk', ['-q', at('disk.raw')], { input: 'label: dos\ntype=83\n' });
    fs.mkdirSync(at('iso-root'));
    fs.writeFileSync(at('iso-root/README'), 'an installer would be here\n');
    execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'FERRYTEST', '-o', at('installer.bin'), at('iso-root')], { stdio: 'ignore' });
    fs.writeFileSync(at('notes.qcow2'), 'these are notes, not an image\n'.repeat(100));
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', at('base.qcow2'), '-F', 'qcow2', at('chained.qcow2')]);
    execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', at('other.vmdk'), '16M']);
  });
  after(async () => {
    await c?.stop();
  });

  it('imports qcow2, raw and ISO files by what their bytes say, and lists them', async () => {
    const imported: Record<string, Image> = {};
    for (const [name, file, format] of [
      ['base', 'base.qcow2', 'qcow2'],
      ['small', 'looks-raw.img', 'qcow2'],
      ['disk', 'disk.raw', 'raw'],
      ['installer', 'installer.bin', 'iso'],
    ] as const) {
      imported[name] = await c.ferryJson<Image>(['image', 'import', path.join(incoming, file), '--name', name]);
      assert.equal(imported[name]!.format, format, file);
      assert.equal(imported[name]!.file, path.join(c.layout.shared, 'images', `${name}.${format}`));
      assert.ok(fs.existsSync(imported[name]!.file));
    }
    assert.equal(imported.base!.virtualSizeBytes, 64 << 20);
    assert.ok(imported.base!.sizeBytes < 1 << 20, 'a sparse image stays sparse');
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', imported.installer!.file], { encoding: 'utf8' })) as { format: string };
    assert.equal(info.format, 'raw');
    const list = await c.ferryJson<Image[]>(['image', 'list']);
    assert.deepEqual(
      list.map((i) => [i.name, i.format]),
      [
        ['base', 'qcow2'],
        ['disk', 'raw'],
        ['installer', 'iso'],
        ['small', 'qcow2'],
      ],
    );
    assert.match(await c.ferryOk(['image', 'list']), /^installer +iso +/m);
  });

  it('refuses what is not an image, or not one it takes, with one line, recording nothing', async () => {
    const before = await c.ferryJson<Image[]>(['image', 'list']);
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-outside-'));
    fs.copyFileSync(path.join(incoming, 'base.qcow2'), path.join(outside, 'x.qcow2'));
    try {
      for (const [args, line] of [
        [
          [path.join(incoming, 'notes.qcow2'), '--name', 'notes'],
          `${path.join(incoming, 'notes.qcow2')} is not a disk image or an ISO (no qcow2 header, partition table or ISO 9660 signature)`,
        ],
        [
          [path.join(incoming, 'chained.qcow2'), '--name', 'chained'],
          `${path.join(incoming, 'chained.qcow2')} is a qcow2 image over a backing file (${path.join(incoming, 'base.qcow2')}); flatten it first (qemu-img convert -O qcow2)`,
        ],
        [
          [path.join(incoming, 'other.vmdk'), '--name', 'other'],
          `${path.join(incoming, 'other.vmdk')} is a vmdk image; the library takes qcow2, raw disks and ISOs (qemu-img convert -O qcow2 makes one)`,
        ],
        [[path.join(incoming, 'missing.qcow2'), '--name', 'missing'], `${path.join(incoming, 'missing.qcow2')} does not exist`],
        [[path.join(incoming, 'base.qcow2'), '--name', 'base'], "image 'base' already exists"],
        [
          [path.join(incoming, 'base.qcow2'), '--name', 'Bad Name'],
          "image name 'Bad Name' is malformed: use 1-32 lowercase letters, digits, '.', '_' and '-', starting with a letter",
        ],
        [['relative.qcow2', '--name', 'rel'], "the file to import must be an absolute path as the controller sees it, got 'relative.qcow2'"],
        [
          [path.join(outside, 'x.qcow2'), '--name', 'outside'],
          /^the file to import must be inside a storage root, got '\/tmp\/ferry-outside-\w+'; storage roots: /,
        ],
      ] as const) {
        const r = await c.ferry(['image', 'import', ...args]);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        if (typeof line === 'string') assert.equal(r.stderr, `error: ${line}\n`);
        else assert.match(r.stderr.replace(/^error: /, ''), line);
      }
    } finally {
      fs.rmSync(outside, { recursive: true, force: true });
    }
    assert.deepEqual(await c.ferryJson<Image[]>(['image', 'list']), before, 'nothing recorded');
    assert.deepEqual(fs.readdirSync(path.join(c.layout.shared, 'images')).sort(), ['base.qcow2', 'disk.raw', 'installer.iso', 'small.qcow2'], 'no stray file');
  });

  it('deletes an image and its file', async () => {
    assert.equal(await c.ferryOk(['image', 'delete', 'small']), 'image small deleted\n');
    assert.equal(fs.existsSync(path.join(c.layout.shared, 'images', 'small.qcow2')), false);
    const again = await c.ferry(['image', 'delete', 'small']);
    assert.deepEqual([again.code, again.stderr], [2, "error: unknown image 'small' (ferry image list shows them)\n"]);
  });
});
