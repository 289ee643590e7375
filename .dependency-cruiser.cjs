/**
 * Ferry's layers, checked in CI (`npm run lint`):
 *
 *   domain/   records, errors, the clock, pure rules     imports only domain/
 *   ports/    interfaces                                 imports domain/, ports/
 *   controller/  the controller's parts over ports; app.ts is its composition root
 *   qemu/ store/ switch/ node/ api/ cli/ config/ system/   adapters at the edges
 *   dashboard/   the browser console: the typed API client, route definitions, domain
 *
 * No import circles anywhere; only the composition roots (controller/app.ts,
 * node/main.ts, switch/main.ts) bring adapters and parts together, and only
 * daemon/main.ts and the test harness import them.
 */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'Import circles hide which part depends on which.', from: {}, to: { circular: true } },
    {
      name: 'domain-is-pure',
      severity: 'error',
      comment: 'Domain rules and records import nothing with side effects.',
      from: { path: '^src/domain/' },
      to: {
        pathNot: ['^src/domain/', '^node:path$', '^path$', 'node_modules/@hono/zod-openapi|node_modules/zod|node_modules/yaml'],
        dependencyTypesNot: ['type-only'],
      },
    },
    {
      name: 'ports-are-interfaces',
      severity: 'error',
      comment: "Ports are types over domain records; a byte stream (a VM's screen) is Node's Duplex type.",
      from: { path: '^src/ports/' },
      to: { pathNot: ['^src/domain/', '^src/ports/', '^stream$'] },
    },
    {
      name: 'parts-use-ports',
      severity: 'error',
      comment: "The controller's parts reach the world only through ports; adapters are wired in app.ts.",
      from: { path: '^src/controller/', pathNot: '^src/controller/app\\.ts$' },
      to: { path: '^src/(qemu|store|switch|node|api|cli|config|system|daemon|guest)/' },
    },
    {
      name: 'composition-roots-only-from-mains',
      severity: 'error',
      comment: 'Only the daemon entry point (and the test harness) import a composition root.',
      from: { pathNot: ['^src/daemon/', '^src/testing/', '^test/'] },
      to: { path: '^src/(controller/app|node/main|switch/main)\\.ts$' },
    },
    {
      name: 'adapters-do-not-reach-into-the-controller',
      severity: 'error',
      comment: 'QEMU, the store, the switch and the agent know nothing of the controller.',
      from: { path: '^src/(qemu|store|switch|node|system|config|guest)/' },
      to: { path: '^src/controller/' },
    },
    {
      name: 'api-over-services',
      severity: 'error',
      comment: "The API adapter sees the controller only through the services it is given (controller/services.ts and the parts' types).",
      from: { path: '^src/api/' },
      to: { path: '^src/controller/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'console-speaks-the-api',
      severity: 'error',
      comment: 'The browser console knows the cluster only through the API: its client, its route definitions and the domain types.',
      from: { path: '^src/dashboard/' },
      to: {
        pathNot: [
          '^src/dashboard/',
          '^src/api/(client|route-helpers|schemas)\\.ts$',
          '^src/api/routes/',
          '^src/domain/',
          // noVNC draws a VM's screen from the API's WebSocket.
          'node_modules/(uplot|zod|@hono/zod-openapi|@novnc/novnc)/',
          '^@novnc/novnc$',
        ],
      },
    },
  ],
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/' },
  },
};
