// ESLint (typescript-eslint) for Ferry. Besides the recommended rules, three
// of Ferry's own (see ../shared/STYLE.md):
//   - time only through the Clock: no Date.now, setTimeout or setInterval
//     outside src/domain/clock.ts and the edges (QEMU, store, switch, CLI,
//     host tools, the lab, the browser console);
//   - QMP command names only under src/qemu/ ('stop' and 'migrate' are also
//     Ferry's own verbs, so those two are not flagged);
//   - errors are branched on by `code`, never on message text.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const QMP =
  /^(qmp_capabilities|query-[a-z-]+|x-query-[a-z-]+|migrate[-_][a-z_-]+|blockdev-[a-z-]+|block-[a-z-]+|job-(cancel|complete|dismiss|pause|resume|finalize)|nbd-server-[a-z]+|announce-self|calc-dirty-rate|pmemsave|human-monitor-command|system_powerdown|cont|quit|transaction|device_(add|del)|netdev_(add|del)|object-(add|del))$/;

const EDGES = [
  'src/domain/clock.ts',
  'src/qemu/**',
  'src/store/**',
  'src/switch/**',
  'src/cli/**',
  'src/system/**',
  'src/lab/**',
  'src/config/**',
  'src/guest/**',
  'src/node/net-tools.ts',
  'src/node/tap-uplink.ts',
  'src/testing/**',
  'src/dashboard/**',
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'docs/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['scripts/**/*.mjs', '*.js', '*.cjs'],
    languageOptions: { globals: { process: 'readonly', URL: 'readonly', console: 'readonly', module: 'writable' } },
  },
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
      'no-empty': ['error', { allowEmptyCatch: true }],
      'no-control-regex': 'off',
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: EDGES,
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'Time comes from the Clock (src/domain/clock.ts), so tests can move it.' },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'Wait with clock.sleep(ms, signal): time comes from the Clock.' },
        { name: 'setInterval', message: 'Loop with clock.sleep(ms, signal): time comes from the Clock.' },
      ],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/qemu/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: `Literal[value=${QMP}]`, message: "QMP command names stay in src/qemu/: speak Ferry's words here (see ports/hypervisor.ts)." },
        {
          selector: "CallExpression[callee.property.name=/^(includes|startsWith|endsWith|match|search|indexOf)$/][callee.object.property.name='message']",
          message: "Branch on the error's code (isFerryError(e, ErrorCode.X)), never on its message text.",
        },
        {
          selector: "CallExpression[callee.property.name='test'] > MemberExpression.arguments[property.name='message']",
          message: "Branch on the error's code (isFerryError(e, ErrorCode.X)), never on its message text.",
        },
      ],
    },
  },
);
