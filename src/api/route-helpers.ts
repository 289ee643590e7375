/** Building blocks of route definitions (shared by servers and the browser's client: nothing here needs Node). */
import type { z } from '@hono/zod-openapi';
import { ErrorBody } from './schemas.js';

export const json = <S extends z.ZodType>(schema: S) => ({ 'application/json': { schema } });

/** The responses of a JSON route: its 200 and the error every route can answer. */
export function answers<S extends z.ZodType>(schema: S, description = 'OK') {
  return {
    200: { description, content: json(schema) },
    default: { description: 'A Ferry error', content: json(ErrorBody) },
  } as const;
}

export function body<S extends z.ZodType>(schema: S, required = true) {
  return { body: { content: json(schema), required } } as const;
}
