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

  command(image, 'build', 'build the built-in guest image').action(async () => {
    const img = await buildImage((l) => process.stderr.write(l + '\n'));
    print(`guest image: ${img.kernelPath}, ${img.initrdPath} (${img.kernelPackage})`);
  });
}
