/** The image library: disk images and ISOs VMs are made from. */
import { createRoute, z } from '@hono/zod-openapi';
import { IMAGE_FORMATS } from '../../domain/images.js';
import { IMAGE_RECIPES } from '../../ports/image-builder.js';
import { answers, body } from '../route-helpers.js';
import { ImageName } from '../schemas.js';

const tag = ['Images'];

export const ImageSchema = z
  .object({
    name: z.string(),
    format: z.enum(IMAGE_FORMATS as unknown as ['qcow2', 'raw', 'iso']),
    file: z.string(),
    virtualSizeBytes: z.number(),
    sizeBytes: z.number(),
    source: z.string(),
    importedAtMs: z.number(),
  })
  .openapi('Image');

export const ImageImportBody = z
  .strictObject({
    name: ImageName,
    /** A path the controller reads, inside a storage root (the shared volume, or the cluster setting storageRoots). */
    file: z.string().min(1).max(4096),
  })
  .openapi('ImageImport');

export const ImageBuildBody = z
  .strictObject({
    recipe: z.enum(IMAGE_RECIPES, { error: (iss) => `no image recipe '${String(iss.input)}' (recipes: ${IMAGE_RECIPES.join(', ')})` }),
    name: ImageName,
  })
  .openapi('ImageBuild');

const params = z.object({ name: ImageName });

export const imageRoutes = {
  list: createRoute({ method: 'get', path: '/api/v1/images', tags: tag, summary: 'The image library', responses: answers(z.array(ImageSchema)) }),
  import: createRoute({
    method: 'post',
    path: '/api/v1/images',
    tags: tag,
    summary: 'Import a qcow2 image, a raw disk or an ISO (the format from its bytes)',
    request: body(ImageImportBody),
    responses: answers(ImageSchema),
  }),
  build: createRoute({
    method: 'post',
    path: '/api/v1/images/build',
    tags: tag,
    summary: "Build an image from Debian's packages on the controller's host (cached) and add it to the library",
    request: body(ImageBuildBody),
    responses: answers(ImageSchema),
  }),
  delete: createRoute({
    method: 'delete',
    path: '/api/v1/images/{name}',
    tags: tag,
    summary: 'Delete an image',
    request: { params },
    responses: answers(z.object({ deleted: z.string() })),
  }),
};
