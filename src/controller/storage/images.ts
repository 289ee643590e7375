/**
 * The image library: disk images and ISOs on the shared volume. An import
 * is judged whole before anything is recorded (the file is inside a
 * storage root, qemu-img can read it, its bytes say qcow2, a raw disk or an
 * ISO, a qcow2 passes its check), then copied into `SHARED/images` and
 * recorded; a failed copy leaves no file and no record.
 */
import path from 'node:path';
import type { Clock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import { type ImageRecord, classifyImage } from '../../domain/images.js';
import type { StateLayout } from '../../domain/layout.js';
import type { EventSink } from '../../ports/events.js';
import type { ClusterStore } from '../../ports/store.js';
import type { Volume } from '../../ports/volume.js';
import type { ImageBuilder, ImageRecipe } from '../../ports/image-builder.js';
import type { StoreSettings } from '../core/settings.js';

export interface ImagesDeps {
  store: ClusterStore;
  volume: Volume;
  settings: StoreSettings;
  layout: StateLayout;
  clock: Clock;
  events: EventSink;
  /** The VMs that need an image's file: linked clones of it, and those with it attached as an ISO. */
  usedBy: (image: string) => Promise<string[]>;
  builder: ImageBuilder;
}

const key = (name: string) => `images/${name}`;

export class Images {
  constructor(private readonly d: ImagesDeps) {}

  async list(): Promise<ImageRecord[]> {
    return (await this.d.store.list<ImageRecord>('images/')).map((e) => e.value).sort((a, b) => a.name.localeCompare(b.name));
  }

  async get(name: string): Promise<ImageRecord> {
    const e = await this.d.store.get<ImageRecord>(key(name));
    if (!e) throw errors.invalid('image', `unknown image '${name}' (ferry image list shows them)`);
    return e.value;
  }

  async import(req: { file: string; name: string }): Promise<ImageRecord> {
    if (await this.d.store.get(key(req.name))) throw errors.alreadyExists('image', req.name);
    if (!path.isAbsolute(req.file))
      throw errors.invalid('file', `the file to import must be an absolute path as the controller sees it, got '${req.file.slice(0, 64)}'`);
    // Only from inside the storage roots: the controller reads the file, so it must not be any file of its host.
    const dir = await this.d.settings.confine(path.dirname(req.file), 'the file to import');
    return this.record(path.join(dir, path.basename(req.file)), req.name);
  }

  /** Builds a recipe's image on the controller's host (cached) and records it like an import. */
  async build(req: { recipe: ImageRecipe; name: string }): Promise<ImageRecord> {
    if (await this.d.store.get(key(req.name))) throw errors.alreadyExists('image', req.name);
    const file = await this.d.builder.build(req.recipe, () => {});
    return this.record(file, req.name);
  }

  /** Judges a file whole, copies it into the library and records it; a failure leaves neither file nor record. */
  private async record(file: string, name: string): Promise<ImageRecord> {
    if (!this.d.volume.exists(file)) throw errors.invalid('file', `${file} does not exist`);
    const probe = await this.d.volume.probe(file);
    const format = classifyImage(file, probe);
    if (typeof format !== 'string') throw errors.invalid('file', format.error);
    if (format === 'qcow2') {
      await this.d.volume.verify(file).catch((e: unknown) => {
        throw errors.invalid('file', `${file} fails qemu-img check: ${(e as Error).message.slice(0, 200)}`);
      });
    }
    const target = path.join(this.d.layout.shared, 'images', `${name}.${format}`);
    if (this.d.volume.exists(target)) throw errors.alreadyExists('image file', target);
    const sizeBytes = await this.d.volume.copyFile(file, target);
    const record: ImageRecord = {
      name,
      format,
      file: target,
      virtualSizeBytes: probe.virtualSizeBytes,
      sizeBytes,
      source: file,
      importedAtMs: this.d.clock.nowMs(),
    };
    try {
      await this.d.store.put(key(name), record, { expectRevision: 0 });
    } catch (e) {
      this.d.volume.remove(target);
      throw e;
    }
    await this.d.events.emit({ type: 'image.imported', message: `image ${name} imported from ${file} (${format})`, data: { image: name } });
    return record;
  }

  async delete(name: string): Promise<{ deleted: string }> {
    const image = await this.get(name);
    const users = await this.d.usedBy(name);
    if (users.length)
      throw errors.invalidState(
        `image '${name}' is in use by VM${users.length > 1 ? 's' : ''} ${users.join(', ')} (delete ${users.length > 1 ? 'them' : 'it'} first)`,
        {
          image: name,
          vms: users,
        },
      );
    await this.d.store.delete(key(name));
    this.d.volume.remove(image.file);
    await this.d.events.emit({ type: 'image.deleted', message: `image ${name} deleted`, data: { image: name } });
    return { deleted: name };
  }
}
