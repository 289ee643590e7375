/** Hosts joining, CLIs logging in, and the tokens that let them (a cluster of real hosts only). */
import { createRoute, z } from '@hono/zod-openapi';
import { NIC_BACKENDS } from '../../domain/nic.js';
import { TOKEN_KINDS, TOKEN_TTL } from '../../domain/join-token.js';
import { answers, body } from '../route-helpers.js';
import { NodeName, VolumeSightingSchema } from '../schemas.js';

const tag = ['Joining'];
const Token = z.string().max(200);
const Pem = z.string().max(8192);

export const JoinInfoSchema = z
  .object({
    clusterId: z.string(),
    clusterName: z.string(),
    caPem: z.string(),
    networks: z.array(z.object({ name: z.string(), subnet: z.string(), role: z.string() })),
  })
  .openapi('JoinInfo');

export const JoinBody = z
  .strictObject({
    token: Token,
    name: NodeName,
    publicKeyPem: Pem,
    /** The host's address on each cluster network. */
    addresses: z.record(z.string().max(40), z.string().max(45)),
    /** What the host reads from the shared volume's marker. */
    volume: VolumeSightingSchema,
    memoryMiB: z
      .number()
      .int()
      .min(64)
      .max(16 * 1048576)
      .optional(),
    cpuModel: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,40}$/)
      .optional(),
    nicBackend: z.enum(NIC_BACKENDS as unknown as ['stream', 'tap', 'bridge']).optional(),
    /** The key for this host's controller certificate: it joins as a controller too (its token must allow that). */
    controllerPublicKeyPem: Pem.optional(),
  })
  .openapi('JoinRequest');

export const JoinAnswerSchema = z
  .object({
    clusterId: z.string(),
    clusterName: z.string(),
    certPem: z.string(),
    caPem: z.string(),
    controllers: z.array(z.string()),
    migrationAddress: z.string(),
    apiToken: z.string(),
    /** For a host that joined as a controller: the cluster's configuration, the CA's key, its controller certificate and URL. */
    controller: z.object({ config: z.record(z.string(), z.unknown()), caKeyPem: z.string(), certPem: z.string(), url: z.string() }).optional(),
  })
  .openapi('JoinAnswer');

export const TokenBody = z
  .strictObject({
    kind: z.enum(TOKEN_KINDS as unknown as ['join', 'login'], { error: () => 'the token kind must be join or login' }),
    ttlMs: z
      .number()
      .int()
      .min(TOKEN_TTL.minMs, { error: `a token lives at least ${TOKEN_TTL.minMs / 60_000} minute` })
      .max(TOKEN_TTL.maxMs, { error: `a token lives at most ${TOKEN_TTL.maxMs / 86_400_000} days` })
      .optional(),
    /** A join token that lets the host run a controller too. */
    controller: z.boolean().optional(),
  })
  .refine((b) => !b.controller || b.kind === 'join', { error: 'only a join token can let a host run a controller' })
  .openapi('TokenRequest');

export const joinRoutes = {
  info: createRoute({
    method: 'get',
    path: '/api/v1/join',
    tags: tag,
    summary: "What a joining host checks before it trusts the cluster: the CA (against its token's fingerprint) and the networks",
    responses: answers(JoinInfoSchema),
  }),
  join: createRoute({
    method: 'post',
    path: '/api/v1/join',
    tags: tag,
    summary: 'A host joins with a join token and its public key, and gets its certificate',
    request: body(JoinBody),
    responses: answers(JoinAnswerSchema),
  }),
  login: createRoute({
    method: 'post',
    path: '/api/v1/login',
    tags: tag,
    summary: "A CLI logs in with a login token and gets the API token and the cluster's CA",
    request: body(z.strictObject({ token: Token })),
    responses: answers(z.object({ token: z.string(), caPem: z.string(), url: z.string(), controllers: z.array(z.string()).optional() })),
  }),
  issue: createRoute({
    method: 'post',
    path: '/api/v1/tokens',
    tags: tag,
    summary: 'Issue a single-use join or login token',
    request: body(TokenBody),
    responses: answers(z.object({ token: z.string(), expiresAtMs: z.number() })),
  }),
};

/** Paths that answer without the API token or a certificate: they carry a token of their own, or nothing secret. */
export const OPEN_PATHS: readonly string[] = [joinRoutes.join.path, joinRoutes.login.path];
