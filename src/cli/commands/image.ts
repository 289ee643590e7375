/** `ferry image`: the image library (import, list, delete) and the built-in guest image. */
import type { Command } from 'commander';
import { imageRoutes } from '../../api/routes/images.js';
import { buildImage } from '../../guest/image.js';
import { type Cluster, command } from '../context.js';
import { bytes, json, print, table } from '../output.js';

export function imageCommands(program: Command, connect: () => Cluster): void {
  const image = command(program, 'image', 'the image library (disk images and ISOs on the shared volume) and the built-in guest image');

  command(image, 'import', 'import a qcow2 image, a raw disk or an ISO into the library (its format from its bytes)')
    .argument('<FILE>', 'the file: an absolute path as the controller sees it, inside a storage root (the shared volume or the storageRoots setting)')
    .requiredOption('--name <NAME>', "the image's name in the library")
    .option('--json', 'print the image as JSON')
    .action(async (file: string, o: { name: string; json?: boolean }) => {
      const img = await connect().api.call(imageRoutes.import, { body: { name: o.name, file } });
      if (o.json) return json(img);
      print(`image ${img.name} imported: ${img.format}, ${bytes(img.virtualSizeBytes)} (${bytes(img.sizeBytes)} on the volume) from ${img.source}`);
    });

  command(image, 'list', 'the images in the library')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await connect().api.call(imageRoutes.list, {});
      if (o.json) return json(list);
      print(
        table(
          ['NAME', 'FORMAT', 'SIZE', 'ON VOLUME', 'IMPORTED', 'FROM'],
          list.map((i) => [i.name, i.format, bytes(i.virtualSizeBytes), bytes(i.sizeBytes), new Date(i.importedAtMs).toISOString(), i.source]),
        ),
      );
    });

  command(image, 'delete', 'delete an image from the library')
    .argument('<NAME>', 'the image')
    .action(async (name: string) => {
      const r = await connect().api.call(imageRoutes.delete, { params: { name } });
      print(`image ${r.deleted} deleted`);
    });

  command(image, 'build', "build an image: without a recipe the built-in guest; 'debian' a bootable Debian 12 into the library")
    .argument('[RECIPE]', "debian: Debian 12 from Debian's packages, with cloud-init, qemu-guest-agent and openssh-server")
    .option('--name <NAME>', "the library image's name (default debian-12)")
    .option('--json', 'print the image as JSON')
    .action(async (recipe: string | undefined, o: { name?: string; json?: boolean }) => {
      if (recipe === undefined) {
        const img = await buildImage((l) => process.stderr.write(l + '\n'));
        print(`guest image: ${img.kernelPath}, ${img.initrdPath} (${img.kernelPackage})`);
        return;
      }
      const img = await connect().api.call(imageRoutes.build, { body: { recipe: recipe as never, name: o.name ?? 'debian-12' } }, { timeoutMs: 30 * 60_000 });
      if (o.json) return json(img);
      print(`image ${img.name} built: ${img.format}, ${bytes(img.virtualSizeBytes)} (${bytes(img.sizeBytes)} on the volume) from ${img.source}`);
    });
}
